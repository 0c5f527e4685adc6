"""Backfill: replay the canonical event log through the dataflow into the offline store."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
from bytewax.run import cli_main
from tqdm import tqdm

from core import names as n
from core.names import BACKFILL_MANIFEST
from stream.flow import build_flow
from stream.io import (
    DeadLetterParquetSink,
    EventLogSource,
    OfflineParquetSink,
    few_full_collections,
)


@dataclass(frozen=True)
class BackfillReport:
    events: int
    seconds: float
    rows: dict[str, int]
    dead_letters: int
    seconds_tail: float = 0.0  # the last tenth of the log (from the batch it begins in)
    events_tail: int = 0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def events_per_s_last10pct(self) -> float:
        return (
            self.events_tail / self.seconds_tail if self.seconds_tail and self.events_tail else 0.0
        )


def _count_rows(folder: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.glob("*.parquet"))


TAIL_FROM = 0.9  # the report's tail: the events from this fraction of the log on


def _write_manifest(folder: Path, events_path: Path, events: int) -> None:
    """What the live job continues from (stream.live.backfill_history)."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "events_path": str(events_path.resolve()),
        "events": events,
        "finished_at": datetime.now(UTC).isoformat(),
    }
    (folder / BACKFILL_MANIFEST).write_text(json.dumps(record, indent=2))


def _swap_in(stage: Path, final: Path) -> None:
    """Replace ``final`` by ``stage`` (the old one is removed only once the new one is there)."""
    stage.mkdir(parents=True, exist_ok=True)
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    stage.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def run_backfill(
    events_path: Path,
    offline_dir: Path,
    dead_letter_dir: Path,
    batch_rows: int = 20_000,
    progress: bool = True,
) -> BackfillReport:
    """Recompute every feature view from ``events_path`` and swap it into ``offline_dir``.

    Rows are written to a staging folder first; the previous offline store is replaced only
    when the whole run succeeded, so a failed backfill loses nothing.
    """
    if not events_path.exists():
        raise FileNotFoundError(f"{events_path} not found: run `make import` first")
    total = pq.ParquetFile(events_path).metadata.num_rows
    staging = offline_dir.with_name(offline_dir.name + ".staging")
    dead_staging = dead_letter_dir.with_name(dead_letter_dir.name + ".staging")
    for folder in (staging, dead_staging):
        shutil.rmtree(folder, ignore_errors=True)
    bar = tqdm(total=total, unit="ev", desc="backfill", disable=not progress, mininterval=0.5)
    read, tail = [0], [0.0, 0]  # rows read; (when the last tenth began, its rows)

    def advance(rows: int) -> None:
        """Progress of the source: marks the batch in which the last tenth of the log begins
        (called before that batch flows through the steps)."""
        if read[0] < int(total * TAIL_FROM) <= read[0] + rows:
            tail[:] = [time.perf_counter(), total - read[0]]
        read[0] += rows
        bar.update(rows)

    source = EventLogSource(events_path, batch_rows=batch_rows, progress=advance)
    flow = build_flow(source, OfflineParquetSink(staging), DeadLetterParquetSink(dead_staging))
    started = time.perf_counter()
    try:
        with few_full_collections(threshold=None):  # finite run: no cyclic GC at all
            # Bytewax's runner (not its testing helper). One epoch for the whole replay: a
            # backfill has no recovery, so per-epoch state snapshots would only copy state.
            cli_main(flow, epoch_interval=timedelta(days=365))
    finally:
        bar.close()
    ended = time.perf_counter()
    seconds = ended - started
    for view in n.VIEW_FEATURES:  # a view no event fed (item_feedback: no impressions) exists
        (staging / view).mkdir(parents=True, exist_ok=True)
    _write_manifest(staging, events_path, total)
    for final, stage in ((offline_dir, staging), (dead_letter_dir, dead_staging)):
        _swap_in(stage, final)
    rows = {view: _count_rows(offline_dir / view) for view in n.VIEW_FEATURES}
    return BackfillReport(
        total, seconds, rows, _count_rows(dead_letter_dir), ended - tail[0], int(tail[1])
    )
