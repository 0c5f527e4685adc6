"""Sources and sinks of the feature dataflow: event-log replay in, Parquet partitions out."""

from __future__ import annotations

import fcntl
import gc
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core import names as n
from core.schema import feature_row_schema
from stream.steps import DeadLetter, KeyedRows

log = logging.getLogger(__name__)
LOCK_FILE = ".lock"  # in the offline store's folder: compaction and forget rewrite files

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("reason", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("seen_at", pa.timestamp("us", tz="UTC")),
    ]
)


YOUNG_OBJECTS = 10_000  # new objects between young collections in a long run (CPython: 700)


@contextmanager
def few_full_collections(threshold: int | None = 1_000) -> Iterator[None]:
    """Run a long dataflow with CPython's cyclic collections made rare.

    The dataflow makes no reference cycles, but it keeps millions of live objects (per-entity
    state, buffered rows); every full collection scans them all, so its cost grows with the
    history seen: measured, 40-47% of a backfill's time and the cause of its rate falling from
    ~11k to ~4.6k events/s over Online Retail, while each such collection freed nothing.
    Young collections run every ``YOUNG_OBJECTS`` new objects instead of 700: a batch's rows
    live until the sink has written them, so each frequent young collection moved them on and
    the middle generation scanned them again (measured on the live job, collector time fell
    from 2.4-3.2 to 1.6-1.8 µs an event). Objects alive at the start (modules, the Feast
    registry) are frozen out of every collection. ``threshold=None`` turns the collector off
    for a finite run (a backfill: its memory is the same with and without, measured)."""
    old, was_enabled = gc.get_threshold(), gc.isenabled()
    gc.freeze()
    if threshold is None:
        gc.disable()
    else:
        gc.set_threshold(YOUNG_OBJECTS, 100, threshold)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def iter_log_batches(path: Path, offset: int, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
    """Rows of a canonical event log from row ``offset`` on, in batches of dicts."""
    skip = offset
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        yield batch.slice(skip).to_pylist()
        skip = 0


class _ReplayPartition(StatefulSourcePartition[list[dict[str, Any]], int]):
    def __init__(
        self,
        path: Path,
        offset: int,
        batch_rows: int,
        speed: float | None,
        progress: Callable[[int], None] | None,
    ) -> None:
        self._offset = offset
        self._batch_rows = batch_rows
        self._speed = speed
        self._progress = progress
        self._rows = self._iter_rows(path, offset)
        self._pending: dict[str, Any] | None = None
        self._anchor: tuple[float, float] | None = None  # (wall seconds, event seconds)

    def _iter_rows(self, path: Path, offset: int) -> Iterator[dict[str, Any]]:
        for rows in iter_log_batches(path, offset, self._batch_rows):
            yield from rows

    def _due(self, row: dict[str, Any]) -> float:
        """Wall-clock second at which ``row`` is due under the speed factor."""
        event_s = row[n.EVENT_TIMESTAMP].timestamp()
        if self._anchor is None:
            self._anchor = (time.time(), event_s)
        wall0, event0 = self._anchor
        return wall0 + (event_s - event0) / (self._speed or 1.0)

    def next_batch(self) -> list[list[dict[str, Any]]]:
        out: list[dict[str, Any]] = []
        now = time.time()
        while len(out) < self._batch_rows:
            row = self._pending if self._pending is not None else next(self._rows, None)
            self._pending = None
            if row is None:
                if not out:
                    raise StopIteration
                break
            if self._speed is not None and self._due(row) > now:
                self._pending = row
                break
            out.append(row)
        self._offset += len(out)
        if self._progress is not None and out:
            self._progress(len(out))
        return [out] if out else []  # one element per batch (stream.flow)

    def next_awake(self) -> datetime | None:
        if self._speed is not None and self._pending is not None:
            return datetime.fromtimestamp(self._due(self._pending), tz=UTC)
        return None

    def snapshot(self) -> int:
        return self._offset


class EventLogSource(FixedPartitionedSource[list[dict[str, Any]], int]):
    """Replays a canonical event log (Parquet, in event-time order) once, a batch of rows an
    element (the dataflow works on batches: stream.flow).

    ``speed=None`` replays as fast as possible; ``speed=60`` plays one hour of event time per
    minute. Resume state is the row offset, so a recovered run continues where it stopped.
    """

    def __init__(
        self,
        path: Path,
        batch_rows: int = 20_000,
        speed: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.path = Path(path)
        self.batch_rows = batch_rows
        self.speed = speed
        self.progress = progress

    def list_parts(self) -> list[str]:
        return [self.path.name]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ReplayPartition:
        return _ReplayPartition(
            self.path, resume_state or 0, self.batch_rows, self.speed, self.progress
        )


def _part_name(prefix: str, first_key: str, last_key: str, count: int) -> str:
    """Deterministic file name: re-writing the same rows after a restart replaces, not adds."""
    digest = hashlib.sha1(f"{first_key}|{last_key}|{count}".encode()).hexdigest()[:16]
    return f"{prefix}-{digest}.parquet"


def write_parquet_atomic(table: pa.Table, path: Path, **options: Any) -> None:
    """Write ``table`` to ``path`` whole or not at all (``options``: ``pq.write_table``'s)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, **options)
    tmp.replace(path)


def supersede(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Drop rows that a later version at the same (entity, event time) replaces.

    Feast breaks event-time ties by ``created_timestamp``, so such rows are never read by a
    point-in-time join or by materialize; an invoice of 20 lines then writes one row, not 20.
    Live events seldom share a time: a set of the slots tells first whether any do.
    """
    if len({(row[key], row[n.EVENT_TIMESTAMP]) for row in rows}) == len(rows):
        return rows
    latest: dict[tuple[Any, Any], dict[str, Any]] = {}
    for row in rows:
        slot = (row[key], row[n.EVENT_TIMESTAMP])
        kept = latest.get(slot)
        if kept is None or row[n.CREATED_TIMESTAMP] >= kept[n.CREATED_TIMESTAMP]:
            latest[slot] = row
    return list(latest.values())


def write_partition(
    root: Path, view: str, rows: list[dict[str, Any]], prefix: str
) -> list[dict[str, Any]]:
    """Write ``rows`` of ``view`` (superseded ones dropped) as one new Parquet partition under
    ``root/view``, atomically and under a name derived from its rows; returns what was written.
    """
    key = n.VIEW_ENTITY_KEY[view]
    rows = supersede(rows, key)
    if rows:
        name = _part_name(
            prefix,
            f"{rows[0][key]}@{rows[0][n.CREATED_TIMESTAMP]}",
            f"{rows[-1][key]}@{rows[-1][n.CREATED_TIMESTAMP]}",
            len(rows),
        )
        table = pa.Table.from_pylist(rows, schema=feature_row_schema(view))
        # No dictionary pages: the ids and bucket texts of a write are mostly distinct, so
        # they only cost time (write_table 1.4 -> 0.9 µs an event) and bytes (10% more).
        write_parquet_atomic(table, root / view / name, use_dictionary=False)
    return rows


@contextmanager
def offline_lock(root: Path) -> Iterator[None]:
    """Hold the offline store's lock (``root/.lock``, an exclusive ``flock``) while files are
    replaced by others: compaction and a forget's rewrite never interleave, so a compaction
    cannot bring back the rows a forget just removed (other processes included)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _level_files(folder: Path, prefix: str, level: int) -> list[Path]:
    """``prefix``'s files of compaction ``level`` in ``folder`` (0: as the sink wrote them,
    ``prefix-<digest>``; L: ``prefix-cL-<digest>``), oldest first."""
    tag = "" if level == 0 else f"c{level}-"
    pattern = re.compile(rf"{re.escape(prefix)}-{tag}[0-9a-f]{{16}}\.parquet")
    found = [p for p in folder.glob(f"{prefix}-*.parquet") if pattern.fullmatch(p.name)]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def _journal_path(folder: Path, prefix: str, digest: str) -> Path:
    return folder / f".compact-{prefix}-{digest}.json"


def finish_compactions(folder: Path, prefix: str) -> None:
    """Complete what a compaction of ``prefix`` killed midway left: its journal names the
    merged file and its inputs; the inputs go when the merged file is in place, else the
    journal goes (the inputs are all still there)."""
    for journal in folder.glob(f".compact-{prefix}-*.json"):
        info = json.loads(journal.read_text())
        if (folder / info["output"]).exists():
            for name in info["inputs"]:
                (folder / name).unlink(missing_ok=True)
        journal.unlink()


def compact_files(root: Path, view: str, prefix: str, files_per_level: int) -> int:
    """Merge ``prefix``'s small Parquet files of ``view`` into fewer, larger ones, in levels:
    every ``files_per_level`` files of one level become one file of the next (an LSM tree's
    tiers: each row is rewritten once per level, and a view holds at most about
    ``files_per_level`` files per level). Returns how many files were merged.

    Crash-safe: the merged file is written under a temporary name, a journal names it and its
    inputs, then it is renamed into place and the inputs deleted (:func:`finish_compactions`
    completes a killed run). Readers see each row at least once at any moment; for a moment
    twice, the same row, which Feast reads once (same entity, event and created time)."""
    folder = root / view
    merged, level = 0, 0
    with offline_lock(root):
        finish_compactions(folder, prefix)
        while len(files := _level_files(folder, prefix, level)) >= files_per_level:
            files = files[:files_per_level]
            digest = hashlib.sha1("|".join(p.name for p in files).encode()).hexdigest()[:16]
            output = folder / f"{prefix}-c{level + 1}-{digest}.parquet"
            tmp = output.with_name(f".{output.name}.tmp")
            schema = feature_row_schema(view)
            with pq.ParquetWriter(tmp, schema) as writer:  # one input in memory at a time
                for p in files:
                    writer.write_table(pq.read_table(p, schema=schema))
            journal = _journal_path(folder, prefix, digest)
            journal.write_text(
                json.dumps({"output": output.name, "inputs": [p.name for p in files]})
            )
            tmp.replace(output)
            for p in files:
                p.unlink()
            journal.unlink()
            merged += len(files)
            if len(_level_files(folder, prefix, level)) < files_per_level:
                level += 1
    return merged


class Compactor:
    """Compacts one writer's small offline files (:func:`compact_files`) in a background
    thread: Arrow reads, concatenates and writes outside the GIL, so the dataflow goes on.
    ``poke`` after each write (at most one new file per view) starts a round once enough
    files were written since the last for a merge (a round lists and stats the folders: run
    after every write it cost a tenth of the live job), unless one is running; the first poke
    starts one for what earlier runs left. ``close`` waits."""

    def __init__(self, root: Path, views: list[str], prefix: str, files_per_level: int) -> None:
        self._root = root
        self._views = views
        self._prefix = prefix
        self._files = files_per_level
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"compact-{prefix}")
        self._running: Future[int] | None = None
        self._written = files_per_level  # since the last round (the first: files left before)
        for view in views:
            if (root / view).exists():
                finish_compactions(root / view, prefix)

    def _round(self) -> int:
        return sum(compact_files(self._root, v, self._prefix, self._files) for v in self._views)

    def poke(self) -> None:
        self._written += 1
        if self._written < self._files:
            return
        if self._running is not None and not self._running.done():
            return
        if self._running is not None and (exc := self._running.exception()) is not None:
            log.warning("offline compaction failed (%s); the files stay as written", exc)
        self._running = self._pool.submit(self._round)
        self._written = 0

    def close(self) -> None:
        if self._running is not None:
            self._running.result()
        self._pool.shutdown()


class _OfflinePartition(StatelessSinkPartition[KeyedRows]):
    def __init__(self, root: Path, worker: int, rows_per_file: int) -> None:
        self._root = root
        self._worker = worker
        self._rows_per_file = rows_per_file
        self._buffers: dict[str, list[dict[str, Any]]] = {}
        self._buffered = 0

    def write_batch(self, items: list[KeyedRows]) -> None:
        for _key, side in items:
            rows = side.rows
            for view, row in rows:
                if view != n.FORGOTTEN:  # a forget marker: nothing to store offline
                    self._buffers.setdefault(view, []).append(row)
            self._buffered += len(rows)
        if self._buffered >= self._rows_per_file:  # every view at once: the writing cost is
            self.close()  # spread over the run, not left for the end (slow views included)

    def close(self) -> None:
        for view in list(self._buffers):
            rows = self._buffers.pop(view)
            write_partition(self._root, view, rows, f"part-w{self._worker}")
        self._buffered = 0


class OfflineParquetSink(DynamicSink[KeyedRows]):
    """Appends feature rows as Parquet partitions, one folder per feature view.

    Each worker buffers up to ``rows_per_file`` rows (all views together) and then writes each
    view's rows as one new file
    (atomically, under a name derived from its rows, superseded rows dropped: see
    :func:`supersede`); the rest is written on close.
    """

    def __init__(self, root: Path, rows_per_file: int = 50_000) -> None:
        self.root = Path(root)
        self.rows_per_file = rows_per_file

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _OfflinePartition:
        return _OfflinePartition(self.root, worker_index, self.rows_per_file)


class _DeadLetterPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, root: Path, worker: int) -> None:
        self._root = root
        self._worker = worker
        self._rows: list[dict[str, Any]] = []

    def write_batch(self, items: list[DeadLetter]) -> None:
        now = datetime.now(UTC)
        self._rows.extend(
            {"reason": d.reason, "raw": json.dumps(d.raw, default=str), "seen_at": now}
            for d in items
        )

    def close(self) -> None:
        if self._rows:
            table = pa.Table.from_pylist(self._rows, schema=DEAD_LETTER_SCHEMA)
            name = _part_name(
                f"dead-w{self._worker}",
                self._rows[0]["raw"],
                self._rows[-1]["raw"],
                len(self._rows),
            )
            write_parquet_atomic(table, self._root / name)
            self._rows = []


class DeadLetterParquetSink(DynamicSink[DeadLetter]):
    """Malformed events with their reason, as Parquet under ``root`` (never dropped)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        return _DeadLetterPartition(self.root, worker_index)
