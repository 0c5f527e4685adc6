"""Child processes of the ``ig`` commands that run a stack (``ig simulate``, ``ig shop``):
the ``ig`` command line and the environment that points a child at the same project."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.settings import ROOT, Settings


def ig_command(*args: str) -> list[str]:
    """``ig ARGS`` run by this interpreter (the same virtualenv, no PATH lookup)."""
    return [sys.executable, "-m", "cli", *args]


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a child that must see ``settings``: Feast's variables, the event
    streams and the consumer group, offline mode, one quiet OpenMP thread."""
    return {
        **os.environ,
        **settings.feast_env(),
        "IG_EVENTS_STREAM": settings.events_stream,
        "IG_DEAD_LETTER_STREAM": settings.dead_letter_stream,
        "IG_CONSUMER_GROUP": settings.consumer_group,
        "IG_EVENT_PARTITIONS": str(settings.event_partitions),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def start_live_job(settings: Settings, recovery_dir: Path, log: Path) -> subprocess.Popen:
    """``ig stream`` over ``settings``' event stream as a child process, output in ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*ig_command("stream"), "-r", str(recovery_dir), "--report-s", "3600"],
            cwd=ROOT,
            env=child_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Terminate a child, kill it if it does not stop within ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
