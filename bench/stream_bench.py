"""Live-job benchmarks (imported by bench/run.py): throughput, engine ceiling, freshness,
the backfill -> live handover, and a future-dated event.

Each figure runs on its own Redis Stream and its own data folder (a copy of the bench
project's Feast registry, an empty offline store: a live job without history). Throughput is
timed from the first delivery to the moment every entry is acknowledged (counted from the
stream itself, so Redis 6.2 works too), so process start-up is not counted; the Bytewax
pass-through flow reads the same source and only acknowledges.
"""

from __future__ import annotations

import json
import os
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
from core.bus import (
    EVENT_FIELD,
    STREAM_ID,
    Encoded,
    by_partition,
    encode_events,
    entry_id,
    group_info,
    partition_streams,
    publish,
)
from core.redis_server import free_port, redis_client
from core.settings import Settings
from stream.live import RedisStreamSource, live_flow
from stream.metrics import stream_metrics

ROOT = Path(__file__).resolve().parent.parent
MALFORMED = 5
ROUNDS = 3  # throughput runs of each job configuration, in turn (medians reported)


def _events(settings: Settings, count: int, now: bool = False) -> list[dict[str, Any]]:
    """The first ``count`` events of the dataset; ``now``: re-timed to the last second, in
    order (the log's hour of events at the same pace would leave the item sides of a
    partitioned bus hours apart while it is replayed at full speed: late events)."""
    frame = pd.read_parquet(settings.canonical_dir / settings.dataset / "events.parquet")
    frame = frame.iloc[:count]
    if now:
        start = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=1)
        steps = pd.to_timedelta(np.arange(len(frame)) * 1_000_000 // max(len(frame), 1), "us")
        frame = frame.assign(**{n.EVENT_TIMESTAMP: start + steps})
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


def _drop_streams(settings: Settings) -> None:
    """Delete a run's streams once measured: left in the bench's Redis, the runs' entries
    (hundreds of MB by the last round) made every background save (a fork, each minute)
    copy them while later rounds were timed."""
    client = redis_client(settings)
    client.delete(
        *partition_streams(settings.events_stream, settings.event_partitions),
        settings.dead_letter_stream,
    )
    client.close()


def _publish(settings: Settings, events: list[dict[str, Any]]) -> None:
    publish(redis_client(settings), settings.events_stream, events, settings.event_partitions)


class _Loader:
    """The load generator of the throughput runs, as cheap as it can be while timed, since
    it shares the 2 cores with the jobs it times: the events are JSON-encoded
    (:func:`core.bus.encode_events`) and their XADD commands packed in Redis's protocol
    before; ``send`` only writes them to the socket, in chunks of ``chunk`` commands (Redis
    queues the replies); ``close``, after the timed part, reads and checks the replies."""

    def __init__(self, settings: Settings, encoded: list[Encoded], chunk: int = 1000) -> None:
        self._client = redis_client(settings)
        self._conn = self._client.connection_pool.get_connection()
        commands = [("XADD", name, "*", EVENT_FIELD, payload) for _, name, payload in encoded]
        pieces = [commands[start : start + chunk] for start in range(0, len(commands), chunk)]
        self._chunks = [(len(piece), self._conn.pack_commands(piece)) for piece in pieces]
        self._encoded = encoded
        self._sent = 0  # commands written, whose replies ``close`` reads

    def send(self) -> None:
        """Write every command, then wait (sleeping) until Redis has added them all, so
        that what :func:`_wait_done` takes for the streams' last entries is the last."""
        streams = {name for _, name, _ in self._encoded}
        before = sum(self._client.xlen(s) for s in streams)  # (0 for a stream not there yet)
        for count, packed in self._chunks:
            self._conn.send_packed_command(packed, check_health=False)
            self._sent += count
        while sum(self._client.xlen(s) for s in streams) < before + len(self._encoded):
            time.sleep(0.002)

    def close(self) -> None:
        """Read the replies of what was sent (none when the run failed before it sent)."""
        try:
            for _ in range(self._sent):
                reply = self._conn.read_response()
                assert isinstance(reply, bytes | str), f"XADD failed: {reply!r}"
        finally:
            self._client.connection_pool.release(self._conn)


def _wait_done(
    settings: Settings, total: int, timeout: float = 600, since: float | None = None
) -> float:
    """Seconds from the first delivery (or from ``since``, a ``time.monotonic()``) until
    every entry of every partition published so far is delivered and acknowledged. O(1)
    Redis calls per partition and poll, Redis 6.2 and 7."""
    client = redis_client(settings)
    streams = [
        s
        for s in partition_streams(settings.events_stream, settings.event_partitions)
        if client.exists(s)
    ]
    last = {s: entry_id(client.xinfo_stream(s)["last-generated-id"]) for s in streams}
    first, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = 0
        for stream in streams:
            group = group_info(client, stream, settings.consumer_group)
            at = entry_id(group["last-delivered-id"]) if group else "0-0"
            if at != "0-0" and first is None:
                first = time.monotonic()
            done += at == last[stream] and group["pending"] == 0
        if done == len(streams):
            return time.monotonic() - (since or first or time.monotonic())
        time.sleep(0.01)
    raise TimeoutError(f"{settings.events_stream}: not all {total} entries acknowledged")


def _in_thread(fn) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


class _AckPartition(StatelessSinkPartition[list[dict[str, Any]]]):
    def __init__(self, settings: Settings) -> None:
        self._s = settings
        self._client = redis_client(settings)
        self._streams = partition_streams(settings.events_stream, settings.event_partitions)

    def write_batch(self, items: list[list[dict[str, Any]]]) -> None:
        ids = (e[STREAM_ID] for batch in items for e in batch)  # the source's batches
        for k, part in by_partition(ids).items():
            self._client.xack(self._streams[k], self._s.consumer_group, *part)


class _AckSink(DynamicSink[list[dict[str, Any]]]):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AckPartition:
        return _AckPartition(self.settings)


def passthrough_flow(settings: Settings) -> Dataflow:
    flow = Dataflow("passthrough")
    raw = op.input("events", flow, RedisStreamSource(settings, idle_stop_s=1.0))
    op.output("ack", op.map("identity", raw, lambda x: x), _AckSink(settings))
    return flow


def _ig_stream(settings: Settings, *args: str) -> subprocess.Popen:
    """``ig stream ARGS`` on ``settings``' bus and data folder (a job without history)."""
    env = {
        **os.environ,
        "IG_DATA_DIR": str(settings.data_dir),
        "IG_REDIS_PORT": str(settings.redis_port),
        "IG_FEAST_PROJECT": settings.feast_project,
        "IG_EVENTS_STREAM": settings.events_stream,
        "IG_DEAD_LETTER_STREAM": settings.dead_letter_stream,
        "IG_EVENT_PARTITIONS": str(settings.event_partitions),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "stream", "--report-s", "3600", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _started(
    settings: Settings, warm: list[dict[str, Any]], *jobs_args: list[str]
) -> list[subprocess.Popen]:
    """``ig stream`` processes (one per ``jobs_args``), started and warmed up: the ``warm``
    events went through every partition (start-up, imports, first writes not measured)."""
    jobs = [_ig_stream(settings, *args) for args in jobs_args]
    _publish(settings, warm)
    _wait_done(settings, len(warm), timeout=300)
    return jobs


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) process ``pid`` and its running children
    (``ig stream -w N``'s worker processes) used so far (Linux /proc)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # itself or its child
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _jobs_rate(
    settings: Settings,
    events: list[dict[str, Any]],
    warm: list[dict[str, Any]],
    *jobs_args: list[str],
) -> tuple[float, float]:
    """(events/s, CPU ms per 1,000 events) of warmed-up ``ig stream`` processes (one per
    ``jobs_args``) over ``events``, timed from the start of their XADD (this process, the
    commands packed before: :class:`_Loader`) until all are acknowledged; CPU: what the job
    processes used meanwhile, all together."""
    loader = _Loader(
        settings, encode_events(settings.events_stream, events, settings.event_partitions)
    )
    jobs = _started(settings, warm, *jobs_args)
    try:
        cpu = sum(_cpu_s(j.pid) for j in jobs)
        since = time.monotonic()
        loader.send()
        took = _wait_done(settings, len(events), since=since)
        cpu = sum(_cpu_s(j.pid) for j in jobs) - cpu
    finally:
        loader.close()
        for job in jobs:
            job.wait(timeout=120)
        _drop_streams(settings)
    return round(len(events) / took, 1), round(1e6 * cpu / len(events), 1)


def offline_files_per_view(settings: Settings) -> int:
    """Parquet files of the view that has most (the live job's, compaction included)."""
    return max(len(list((settings.offline_dir / v).glob("*.parquet"))) for v in n.VIEW_FEATURES)


def _offered(settings: Settings, events: list[dict[str, Any]], rate: float) -> None:
    """XADD ``events`` at ``rate`` events/s, in a pipeline every 5 ms (the load generator:
    this process, not the job's)."""
    client, started, sent = redis_client(settings), time.monotonic(), 0
    while sent < len(events):
        due = min(int((time.monotonic() - started) * rate) + 1, len(events))
        if due > sent:
            publish(client, settings.events_stream, events[sent:due], settings.event_partitions)
            sent = due
        time.sleep(0.005)


def stream_figures(
    settings: Settings, count: int = 20_000, seconds: float = 10.0, sustained: int = 60_000
) -> dict[str, Any]:
    """Throughput of the live job (1 worker in process over ``count`` events; one ``ig
    stream`` process, ``-w 2`` and two processes over ``sustained`` events each: several
    seconds, so that a moment's slowness of the machine weighs less), the engine's ceiling,
    the offline files it leaves, and freshness at half of the measured one-process capacity.
    Events are re-timed to now (see :func:`_events`)."""
    from core.feast_store import open_store

    open_store(settings).list_feature_views()  # Feast imported: the in-process runs' start-up
    events = _events(settings, count, now=True)
    warm = [{**e, n.USER_ID: f"warm-{i}"} for i, e in enumerate(events[:200])]
    out: dict[str, float] = {"stream_bench_events": len(events)}

    # 1 worker, in process: the live job; 5 malformed entries go to the dead letters.
    one = _fresh_stream(settings)
    client = redis_client(one)
    _publish(one, events)
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
    out["offline_files_per_view_after_bench"] = offline_files_per_view(one)
    _drop_streams(one)

    # The engine's ceiling: the same source into a flow that only acknowledges.
    bare = _fresh_stream(settings)
    _publish(bare, events)
    job = _in_thread(lambda: run_main(passthrough_flow(bare)))
    took = _wait_done(bare, len(events))
    job.join()
    out["bytewax_passthrough_events_per_s"] = round(len(events) / took, 1)
    _drop_streams(bare)
    out["stream_over_passthrough"] = round(
        out["stream_events_per_s_1worker"] / out["bytewax_passthrough_events_per_s"], 3
    )

    # One process as a job runs (`ig stream`), then 2 worker processes (-w 2), then 2
    # processes started one by one (-a ... -i 0/1), each on a bus of as many partitions as
    # workers; ROUNDS rounds in turn, each figure the median of its rounds and each ratio the
    # median of its rounds' ratios (the machine's speed moves by a third between runs), every
    # round's figures kept in the *_rounds lists.
    events = _events(settings, sustained, now=True)
    out["stream_sustained_events"] = len(events)
    runs: dict[str, list[tuple[float, float]]] = {"1proc": [], "2worker": [], "2proc": []}
    for _ in range(ROUNDS):
        runs["1proc"].append(
            _jobs_rate(_fresh_stream(settings), events, warm, ["--idle-stop", "2"])
        )
        runs["2worker"].append(
            _jobs_rate(
                _fresh_stream(settings, event_partitions=2),
                events,
                warm,
                ["-w", "2", "--idle-stop", "2"],
            )
        )
        addresses = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
        runs["2proc"].append(
            _jobs_rate(
                _fresh_stream(settings, event_partitions=2),
                events,
                warm,
                *(["-a", addresses, "-i", str(i), "--idle-stop", "2"] for i in (0, 1)),
            )
        )
    for name, got in runs.items():
        out[f"stream_events_per_s_{name}"] = float(np.median([rate for rate, _ in got]))
        out[f"stream_cpu_ms_per_1k_events_{name}"] = float(np.median([cpu for _, cpu in got]))
        out[f"stream_events_per_s_{name}_rounds"] = [rate for rate, _ in got]
    for name in ("2proc", "2worker"):
        ratios = [many[0] / one[0] for one, many in zip(runs["1proc"], runs[name], strict=True)]
        out[f"stream_{name}_over_1proc"] = round(float(np.median(ratios)), 2)
        out[f"stream_{name}_over_1proc_rounds"] = [round(r, 2) for r in ratios]

    # Freshness (XADD -> online write, per event, as the job measures it) at half of the
    # measured one-process capacity, offered by this process to an `ig stream` process.
    rate = round(out["stream_events_per_s_1proc"] / 2, 1)
    fresh = _fresh_stream(settings)
    samples = fresh.data_dir / "freshness.json"
    job, *_ = _started(fresh, warm, ["--idle-stop", "3", "--freshness-out", str(samples)])
    offered = _events(settings, min(count, int(rate * seconds)), now=True)
    _offered(fresh, offered, rate)
    _wait_done(fresh, len(offered))
    job.wait(timeout=120)
    _drop_streams(fresh)
    ms = np.asarray(json.loads(samples.read_text())[-len(offered) :]) * 1000  # not the warm-up
    out |= {
        "freshness_offered_events_per_s": rate,
        "freshness_events": len(offered),
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


if __name__ == "__main__":  # the live-job figures alone, on the current project's data
    from core.settings import get_settings

    print(json.dumps(stream_figures(get_settings()), indent=2))
