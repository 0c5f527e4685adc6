"""Run the live job in production: recovery folder checks, metrics, Bytewax's runner.

``ig stream`` (cli.live) calls :func:`run_live_job`; tests and benchmarks run
``stream.live.live_flow`` with ``bytewax.testing.run_main`` instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig
from bytewax.run import cli_main

from core.bus import partition_streams
from core.names import BACKFILL_MANIFEST
from core.settings import Settings
from stream.flow import USER_SIDE
from stream.io import few_full_collections
from stream.live import HistoryError, backfill_history, live_flow
from stream.metrics import report_every, stream_metrics
from stream.routing import bucket_keys


@dataclass(frozen=True)
class LiveJob:
    """How to run the live job (the ``ig stream`` options)."""

    workers: int = 1
    addresses: tuple[str, ...] = ()
    process_id: int = 0
    recovery_dir: Path | None = None
    epoch_s: float = 2.0
    idle_stop_s: float | None = None
    metrics_port: int | None = None
    report_s: float = 10.0
    freshness_out: Path | None = None  # per-event freshness written here on stop (benchmarks)

    @property
    def partitions(self) -> int:
        return self.workers * max(len(self.addresses), 1)


# What the recovery folder's snapshots hold: one pickled {entity id: state} per state bucket
# (stream.flow.BucketLogic), IG_STATE_BUCKETS of them per side.
LAYOUT_FILE = "layout.json"
STATE_FORMAT = "buckets-v1"


def backfill_finished(manifest: Path) -> float:
    """When the backfill behind ``manifest`` finished (unix s): its ``finished_at``, not the
    file's time, which a later edit of its row count (stream.forget) moves."""
    finished = json.loads(manifest.read_text()).get("finished_at")
    return datetime.fromisoformat(finished).timestamp() if finished else manifest.stat().st_mtime


HASHED = "by hash"


def user_placement(settings: Settings, workers: int) -> str:
    """How the job names its user buckets (:func:`stream.routing.bucket_keys`): by hash, or
    for ``workers`` workers reading the bus partitions (snapshots are stored by name)."""
    streams = tuple(partition_streams(settings.events_stream, settings.event_partitions))
    keys = bucket_keys(USER_SIDE, settings.state_buckets, workers, streams)
    if keys == bucket_keys(USER_SIDE, settings.state_buckets):
        return HASHED
    return f"{workers} workers reading {len(streams)} partitions"


def prepare_recovery(settings: Settings, folder: Path, partitions: int) -> RecoveryConfig:
    """The Bytewax recovery folder, created (``python -m bytewax.recovery``) when empty.
    Raises :class:`HistoryError` when its snapshots predate the last backfill or hold state
    of another layout (``LAYOUT_FILE``)."""
    snapshots = list(folder.glob("part-*.sqlite3"))
    manifest = settings.offline_dir / BACKFILL_MANIFEST
    newest = max((p.stat().st_mtime for p in snapshots), default=None)
    if newest is not None and manifest.exists() and newest < backfill_finished(manifest):
        raise HistoryError(
            f"the recovery folder {folder} predates the last backfill ({manifest}); its "
            "state belongs to the old offline store. Delete the folder: the job then "
            "rebuilds its state from the new backfill's log."
        )
    layout = folder / LAYOUT_FILE
    wanted = {
        "state": STATE_FORMAT,
        "state_buckets": settings.state_buckets,
        "user_buckets": user_placement(settings, partitions),
    }
    if snapshots:
        found = json.loads(layout.read_text()) if layout.exists() else {}
        if found and "user_buckets" not in found:  # written before placement: by hash
            found["user_buckets"] = HASHED
        if found != wanted:
            held = found or "an older version of the live job"
            raise HistoryError(
                f"the recovery folder {folder} holds state of another layout ({held}; this "
                f"job: {wanted}): IG_STATE_BUCKETS, the worker count or IG_EVENT_PARTITIONS "
                "changed (buckets are named for the workers that read their users), or the "
                "job was upgraded. Delete "
                "the folder: the job then rebuilds its state from the backfilled log and the "
                "stream."
            )
    else:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "bytewax.recovery", str(folder), str(partitions)], check=True
        )
        layout.write_text(json.dumps(wanted))
    return RecoveryConfig(folder)


def run_live_job(settings: Settings, job: LiveJob) -> str:
    """Run until stopped (or idle for ``job.idle_stop_s``); returns the metrics summary.
    Raises :class:`HistoryError` when the job cannot continue from the offline store."""
    history = backfill_history(settings)
    recovery = (
        prepare_recovery(settings, job.recovery_dir, job.partitions) if job.recovery_dir else None
    )
    flow = live_flow(
        settings,
        idle_stop_s=job.idle_stop_s,
        consumer=f"features-{job.process_id}",
        history=history or False,
        workers=job.partitions,
    )
    if job.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(job.metrics_port, addr="127.0.0.1", registry=stream_metrics().registry)
    stop = threading.Event()
    report_every(job.report_s, stop)
    if history is not None:
        print(
            f"continuing from the backfill of {history.path} ({history.events:,} events): "
            "without a recovery snapshot, state is first rebuilt from that log and from the "
            "entries this group already processed",
            flush=True,
        )
    print(
        f"live features: {settings.events_stream} ({settings.event_partitions} partition(s)) "
        f"-> Feast {settings.feast_project} "
        f"({job.workers} worker(s), process {job.process_id} of {max(len(job.addresses), 1)}, "
        f"recovery {'on' if recovery else 'off'})",
        flush=True,
    )
    with few_full_collections():  # a long run keeps much state: see the helper's docstring
        cli_main(
            flow,
            workers_per_process=job.workers,
            process_id=job.process_id if job.addresses else None,
            addresses=list(job.addresses) or None,
            epoch_interval=timedelta(seconds=job.epoch_s),
            recovery_config=recovery,
        )
    stop.set()
    if job.freshness_out is not None:
        job.freshness_out.write_text(json.dumps(list(stream_metrics().freshness_samples)))
    return stream_metrics().summary()
