"""Live-job benchmarks (imported by bench/run.py): throughput, engine ceiling, freshness.

Each figure runs on its own Redis Stream of the bench project. Throughput is timed from the
first delivery to the moment every entry is acknowledged (XINFO GROUPS), so process start-up
is not counted; the Bytewax pass-through flow reads the same source and only acknowledges.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from core import names as n
from core.redis_server import redis_client
from core.settings import Settings
from stream.live import RedisStreamSource, group_info, live_flow, publish
from stream.metrics import stream_metrics
from stream.steps import STREAM_ID

ROOT = Path(__file__).resolve().parent.parent
MALFORMED = 5


def _events(settings: Settings, count: int) -> list[dict[str, Any]]:
    frame = pd.read_parquet(settings.canonical_dir / settings.dataset / "events.parquet")
    frame = frame.iloc[:count]
    frame = frame.assign(event_timestamp=frame[n.EVENT_TIMESTAMP].map(lambda t: t.isoformat()))
    return frame.to_dict("records")


def _fresh_stream(settings: Settings) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return settings.model_copy(
        update={"events_stream": f"bench:{tag}:events", "dead_letter_stream": f"bench:{tag}:dead"}
    )


def _wait_done(settings: Settings, total: int, timeout: float = 600) -> float:
    """Seconds from the first delivery until all ``total`` entries are acknowledged."""
    client = redis_client(settings)
    first, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        group = group_info(client, settings.events_stream, settings.consumer_group)
        read = (group or {}).get("entries-read") or 0
        if read and first is None:
            first = time.monotonic()
        if group and read >= total and group["pending"] == 0:
            return time.monotonic() - (first or time.monotonic())
        time.sleep(0.01)
    raise TimeoutError(f"{settings.events_stream}: not all {total} entries acknowledged")


def _in_thread(fn) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


class _AckPartition(StatelessSinkPartition[dict[str, Any]]):
    def __init__(self, settings: Settings) -> None:
        self._s = settings
        self._client = redis_client(settings)

    def write_batch(self, items: list[dict[str, Any]]) -> None:
        self._client.xack(
            self._s.events_stream, self._s.consumer_group, *(i[STREAM_ID] for i in items)
        )


class _AckSink(DynamicSink[dict[str, Any]]):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AckPartition:
        return _AckPartition(self.settings)


def passthrough_flow(settings: Settings) -> Dataflow:
    flow = Dataflow("passthrough")
    raw = op.input("events", flow, RedisStreamSource(settings, idle_stop_s=1.0))
    op.output("ack", op.map("identity", raw, lambda x: x), _AckSink(settings))
    return flow


def stream_figures(
    settings: Settings, count: int = 20_000, rate: float = 200.0, seconds: float = 10.0
) -> dict[str, float]:
    events = _events(settings, count)
    out: dict[str, float] = {"stream_bench_events": len(events)}

    # 1 worker, in process: the live job; 5 malformed entries go to the dead letters.
    one = _fresh_stream(settings)
    client = redis_client(one)
    publish(client, one.events_stream, events)
    for _ in range(MALFORMED):
        client.xadd(one.events_stream, {"event": "{broken"})
    dead_before = next(iter(stream_metrics().dead_letters.collect())).samples[0].value
    job = _in_thread(lambda: run_main(live_flow(one, idle_stop_s=1.0)))
    took = _wait_done(one, len(events) + MALFORMED)
    job.join()
    out["stream_events_per_s_1worker"] = round(len(events) / took, 1)
    out["stream_dead_letters"] = int(
        next(iter(stream_metrics().dead_letters.collect())).samples[0].value - dead_before
    )

    # The engine's ceiling: the same source into a flow that only acknowledges.
    bare = _fresh_stream(settings)
    publish(redis_client(bare), bare.events_stream, events)
    job = _in_thread(lambda: run_main(passthrough_flow(bare)))
    took = _wait_done(bare, len(events))
    job.join()
    out["bytewax_passthrough_events_per_s"] = round(len(events) / took, 1)
    out["stream_over_passthrough"] = round(
        out["stream_events_per_s_1worker"] / out["bytewax_passthrough_events_per_s"], 3
    )

    # Two processes on loopback (ig stream -a ... -i 0/1).
    two = _fresh_stream(settings)
    publish(redis_client(two), two.events_stream, events)
    from core.redis_server import free_port

    addresses = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    env_keys = {
        "IG_EVENTS_STREAM": two.events_stream,
        "IG_DEAD_LETTER_STREAM": two.dead_letter_stream,
    }
    import os

    jobs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "core.cli",
                "stream",
                "-a",
                addresses,
                "-i",
                str(i),
                "--idle-stop",
                "2",
                "--report-s",
                "3600",
            ],
            cwd=ROOT,
            env={**os.environ, **env_keys},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in (0, 1)
    ]
    took = _wait_done(two, len(events))
    for j in jobs:
        j.wait(timeout=120)
    out["stream_events_per_s_2proc"] = round(len(events) / took, 1)

    # Freshness at a fixed offered rate: XADD at `rate` events/s while the job runs.
    fresh = _fresh_stream(settings)
    samples = stream_metrics().freshness_samples
    samples.clear()
    job = _in_thread(lambda: run_main(live_flow(fresh, idle_stop_s=2.0)))
    client = redis_client(fresh)
    offered = events[: int(rate * seconds)]
    started = time.monotonic()
    for i, event in enumerate(offered):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        publish(client, fresh.events_stream, [event])
    _wait_done(fresh, len(offered))
    job.join()
    ms = np.asarray(samples) * 1000
    out |= {
        "freshness_offered_events_per_s": rate,
        "freshness_p50_ms": round(float(np.percentile(ms, 50)), 1),
        "freshness_p99_ms": round(float(np.percentile(ms, 99)), 1),
    }
    return out
