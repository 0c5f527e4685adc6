"""Schema-driven fuzzing of the running API (schemathesis + hypothesis): no request may get a 5xx.

Used by the integration test and by ``make bench`` (api_fuzz_cases, api_fuzz_5xx).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests


@dataclass
class FuzzReport:
    cases: int = 0
    server_errors: list[str] = field(default_factory=list)  # "METHOD path -> status: body"
    by_status: dict[int, int] = field(default_factory=dict)


def fuzz(base_url: str, api_key: str | None, max_examples: int = 25) -> FuzzReport:
    """Drive every operation of ``{base_url}/openapi.json`` with valid and invalid inputs
    (``max_examples`` each per mode); half the cases carry the API key."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import HypothesisException
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    report = FuzzReport()
    session = requests.Session()
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def run(case) -> None:  # type: ignore[no-untyped-def]
                headers = {"X-API-Key": api_key} if api_key and report.cases % 2 else {}
                response = case.call(base_url=base_url, headers=headers, session=session)
                report.cases += 1
                status = response.status_code
                report.by_status[status] = report.by_status.get(status, 0) + 1
                if status >= 500:
                    report.server_errors.append(
                        f"{case.method} {case.formatted_path} -> {status}: {response.text[:200]}"
                    )

            try:
                run()
            except HypothesisException:  # nothing to generate in this mode (e.g. no inputs)
                continue
    return report


@contextmanager
def serving(app: Any, port: int) -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
