"""Live-job benchmarks (imported by bench/run.py): throughput, engine ceiling, freshness,
the backfill -> live handover, and a future-dated event.

Each figure runs on its own Redis Stream and its own data folder (a copy of the bench
project's Feast registry, an empty offline store: a live job without history). Throughput is
timed from the first delivery to the moment every entry is acknowledged (counted from the
stream itself, so Redis 6.2 works too), so process start-up is not counted; the Bytewax
pass-through flow reads the same source and only acknowledges.
"""

from __future__ import annotations

import shutil
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
from core.bus import STREAM_ID, entry_id, group_info, publish
from core.redis_server import redis_client
from core.settings import Settings
from stream.live import RedisStreamSource, live_flow
from stream.metrics import stream_metrics

ROOT = Path(__file__).resolve().parent.parent
MALFORMED = 5


def _events(settings: Settings, count: int) -> list[dict[str, Any]]:
    frame = pd.read_parquet(settings.canonical_dir / settings.dataset / "events.parquet")
    frame = frame.iloc[:count]
    frame = frame.assign(event_timestamp=frame[n.EVENT_TIMESTAMP].map(lambda t: t.isoformat()))
    return frame.to_dict("records")


def _fresh_stream(settings: Settings, **update: Any) -> Settings:
    """Own streams and own data folder (the registry copied, an empty offline store)."""
    tag = uuid.uuid4().hex[:8]
    data_dir = settings.data_dir / "stream-bench" / tag
    for view in n.VIEW_FEATURES:
        (data_dir / "offline" / view).mkdir(parents=True)
    shutil.copy(settings.data_dir / "registry.db", data_dir / "registry.db")
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "events_stream": f"bench:{tag}:events",
            "dead_letter_stream": f"bench:{tag}:dead",
            **update,
        }
    )


def _wait_done(settings: Settings, total: int, timeout: float = 600) -> float:
    """Seconds from the first delivery until every entry (all published before the job
    started) is delivered and acknowledged. O(1) Redis calls per poll, Redis 6.2 and 7."""
    client = redis_client(settings)
    last = entry_id(client.xinfo_stream(settings.events_stream)["last-generated-id"])
    first, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        group = group_info(client, settings.events_stream, settings.consumer_group)
        at = entry_id(group["last-delivered-id"]) if group else "0-0"
        if at != "0-0" and first is None:
            first = time.monotonic()
        if at == last and group["pending"] == 0:
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
        "IG_DATA_DIR": str(two.data_dir),
        "IG_EVENTS_STREAM": two.events_stream,
        "IG_DEAD_LETTER_STREAM": two.dead_letter_stream,
    }
    import os

    jobs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
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


def handover_figures(settings: Settings, count: int = 20_000) -> dict[str, float]:
    """The order a user deploys in, on the first ``count`` events of the log: backfill and
    materialize the first half, run the second half live through the Redis Stream. 1 when
    the online values and visible offline rows equal a backfill of the whole slice."""
    from core.feast_store import materialize, open_store
    from stream.backfill import run_backfill
    from stream.compare import offline_differences, online_differences

    project = _fresh_stream(settings, feast_project=f"handover_{uuid.uuid4().hex[:8]}")
    frame = pd.read_parquet(settings.canonical_dir / settings.dataset / "events.parquet")
    frame = frame.iloc[:count]
    half = len(frame) // 2
    first, whole = project.data_dir / "first_half.parquet", project.data_dir / "all.parquet"
    frame.iloc[:half].to_parquet(first)
    frame.to_parquet(whole)
    from core.feast_store import feast_apply

    feast_apply(project)  # its own Feast project: its own online keys
    run_backfill(first, project.offline_dir, project.data_dir / "dead", progress=False)
    materialize(open_store(project), project)
    later = frame.iloc[half:]
    later = later.assign(event_timestamp=later[n.EVENT_TIMESTAMP].map(lambda t: t.isoformat()))
    publish(redis_client(project), project.events_stream, later.to_dict("records"))
    started = time.perf_counter()
    run_main(live_flow(project, idle_stop_s=1.0))
    took = time.perf_counter() - started
    reference = project.data_dir / "reference"
    run_backfill(whole, reference, project.data_dir / "ref_dead", progress=False)
    differences = offline_differences(project.offline_dir, reference)
    differences += online_differences(project, reference)
    for line in differences:
        print(f"handover difference: {line}")
    settings.export_feast_env()
    return {
        "handover_events": len(frame),
        "handover_live_run_s": round(took, 1),  # history replay of the first half included
        "handover_equal": int(not differences),
    }


def future_event_figures(settings: Settings, count: int = 2_000) -> dict[str, float]:
    """One event at now + 23 h, accepted (IG_FUTURE_TOLERANCE_S and IG_ALLOWED_LATENESS_S set
    to 24 h), then ``count`` normal events of other shoppers at now: the dead letters those
    normal events got (must be 0; with the old global watermark all of them were)."""
    project = _fresh_stream(settings, allowed_lateness_s=86_400, future_tolerance_s=86_400)
    events = _events(settings, count)
    now = pd.Timestamp.now(tz="UTC")
    normal = [{**e, n.EVENT_TIMESTAMP: now.isoformat()} for e in events]
    skewed = {
        **events[0],
        n.USER_ID: "skewed-clock",
        n.EVENT_TIMESTAMP: (now + pd.Timedelta(hours=23)).isoformat(),
    }
    client = redis_client(project)
    publish(client, project.events_stream, [skewed, *normal])
    run_main(live_flow(project, idle_stop_s=1.0))
    dead = (
        client.xlen(project.dead_letter_stream) if client.exists(project.dead_letter_stream) else 0
    )
    return {"future_event_normal_events": count, "stalled_by_future_event": int(dead)}
