"""``ig shop``: the shop page (``/shop/``) served by the API, with the live job beside it, so
every click in the page flows through the real event stream into the features it shows."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import SecretStr

from core.settings import Settings, get_settings

LIVE_JOB_IDLE_S = 10.0  # a live job that polled the stream this recently is running


def register(sub: argparse._SubParsersAction) -> None:
    """``ig shop``."""
    p = sub.add_parser(
        "shop", help="serve the shop page (API + live job) until Ctrl-C; prints its address"
    )
    p.add_argument("--port", type=int, default=None, help="API port (default: IG_API_PORT/8000)")
    p.add_argument(
        "--for",
        dest="seconds",
        type=float,
        default=None,
        help="stop after this many seconds (default: serve until Ctrl-C)",
    )
    p.add_argument(
        "--no-stream", action="store_true", help="do not start a live job (use a running one)"
    )
    p.set_defaults(func=cmd_shop)


def live_job_running(settings: Settings) -> bool:
    """A live job reads the event stream (it polled it in the last few seconds)."""
    import redis

    from core.bus import stream_status
    from core.redis_server import redis_client

    try:
        status = stream_status(
            redis_client(settings),
            settings.events_stream,
            settings.consumer_group,
            settings.event_partitions,
        )
    except (redis.RedisError, OSError):  # Redis down: nothing reads the stream now
        return False
    return status.job_seen_s is not None and status.job_seen_s < LIVE_JOB_IDLE_S


def wait_live_job(
    settings: Settings, job: subprocess.Popen | None, log: Path, timeout: float
) -> None:
    """Until the live job reads the stream (it first rebuilds its state from the backfill)."""
    deadline = time.monotonic() + timeout
    while not live_job_running(settings):
        if job is not None and job.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"the live job exited ({job.returncode}):\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the live job did not start reading in {timeout:.0f} s ({log})")
        time.sleep(0.2)


@contextlib.contextmanager
def shop_stack(
    settings: Settings, port: int, recovery_dir: Path, log: Path, start_job: bool = True
) -> Iterator[tuple[str, subprocess.Popen | None]]:
    """The API (in this process, serving ``/shop/``) and, unless one already reads the
    stream or ``start_job`` is False, the live job (``ig stream``) as a child. Yields the
    API's base URL and the job; stops both on exit."""
    from api.app import create_app
    from api.fuzz import serving
    from cli.procs import start_live_job, stop

    job = None
    if start_job and not live_job_running(settings):
        job = start_live_job(settings, recovery_dir, log)
    try:
        with serving(create_app(settings), port) as base:
            yield base, job
    finally:
        if job is not None:
            stop(job)


def cmd_shop(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the live job too, like Ctrl-C
    settings = get_settings()
    key = settings.api_key or SecretStr(secrets.token_urlsafe(18))  # the page posts with it
    settings = settings.model_copy(update={"api_key": key})
    port = args.port or int(os.environ.get("IG_API_PORT", "8000"))
    log = settings.data_dir / "logs" / "shop-stream.log"
    stack = shop_stack(settings, port, settings.data_dir / "recovery", log, not args.no_stream)
    try:
        with stack as (base, job):
            if job is not None:
                print(
                    f"live job started (pid {job.pid}, log {log}); it first rebuilds its state "
                    "from the backfill (about a minute on Online Retail without a snapshot)",
                    flush=True,
                )
            print(
                f"\nshop: {base}/shop/#key={key.get_secret_value()}\n"
                "  (the key after # lets the page send clicks; it never reaches the server's "
                "logs)\n  Ctrl-C stops the page and the live job.",
                flush=True,
            )
            deadline = None if args.seconds is None else time.monotonic() + args.seconds
            reading = False
            while deadline is None or time.monotonic() < deadline:
                if job is not None and job.poll() is not None:
                    print(f"the live job exited ({job.returncode}): see {log}", file=sys.stderr)
                    return 2
                if not reading and live_job_running(settings):
                    reading = True
                    print(
                        "live job reading the event stream: clicks now reach the shelf", flush=True
                    )
                time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    except RuntimeError as exc:  # the API could not start (port taken: --port / IG_API_PORT)
        print(f"shop: {exc} on port {port} (taken? use --port)", file=sys.stderr)
        return 2
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
