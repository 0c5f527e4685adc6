"""The live mode of the feature dataflow: Redis Streams in, Feast online writes + Parquet out.

- :class:`RedisStreamSource` reads the event bus (one source partition per bus partition)
  through a consumer group; its resume state is the last entry id it emitted, so a recovered
  job re-reads what followed its last snapshot.
- :class:`LiveFeatureSink` writes each batch offline (a new Parquet partition per view, small
  ones merged into larger ones in the background: :class:`stream.io.Compactor`) and online
  (Feast's online write, one per view per batch: :class:`OnlineWriter`), then XACKs every
  source batch whose pieces (its events' user and item state buckets) are all written
  (:class:`SideMarks`). Rows are routed by state bucket, so one partition writes all rows of
  a user or an item, in order.
- :class:`DeadLetterStreamSink` records malformed events with their reason in a stream.
Both sinks are idempotent: a rewrite after a restart writes the same values again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import repeat
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import redis
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import (
    DynamicSink,
    StatelessSinkPartition,
)

from core import names as n
from core.bus import (
    HEARTBEAT_S,
    REPLAY,
    STREAM_ID,
    by_partition,
    decode_entry,
    ensure_group,
    entry_id,
    group_info,
    group_progress,
    heartbeat,
    partition_of,
    partition_streams,
)
from core.redis_server import redis_client
from core.settings import Settings
from stream.io import Compactor, iter_log_batches, write_partition
from stream.metrics import stream_metrics
from stream.steps import CREATED_OFFSET_US, BatchInfo, DeadLetter, KeyedRows

log = logging.getLogger(__name__)
LIVE_PREFIX = "part-live-"  # offline partitions written by the live job
# How long a source partition waits after a read found nothing (or Redis was away) before it
# reads again: the latency an idle job adds to the next event, against idle reads per second.
IDLE_POLL_MS = 10


def retry_redis(write: Callable[[], Any], pause_s: float = 1.0) -> Any:
    """Run an idempotent Redis write, waiting out a lost Redis instead of crashing the job."""
    while True:
        try:
            return write()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            log.warning("redis unavailable (%s); retrying in %.0f s", exc, pause_s)
            stream_metrics().redis_retries.inc()
            time.sleep(pause_s)


@dataclass(frozen=True)
class History:
    """The event log a backfill turned into the offline store: the live job replays its first
    ``events`` rows to rebuild state before it reads the stream (``backfill_manifest``)."""

    path: Path
    events: int


class HistoryError(RuntimeError):
    """The live job cannot know where the offline store's history ends: it refuses to start."""


def backfill_history(settings: Settings) -> History | None:
    """The history the live job continues from: the last backfill's manifest in the offline
    store. ``None`` for an empty project. Raises :class:`HistoryError` when the offline store
    has rows it cannot account for, or the log changed since the backfill."""
    manifest = settings.offline_dir / n.BACKFILL_MANIFEST
    if not manifest.exists():
        rows = [  # rows the live job wrote came from the stream, which it replays itself
            p
            for view in n.VIEW_FEATURES
            for p in (settings.offline_dir / view).glob("*.parquet")
            if not p.name.startswith(LIVE_PREFIX)
        ]
        if rows:
            raise HistoryError(
                f"{settings.offline_dir} has feature rows but no {n.BACKFILL_MANIFEST}: the live "
                "job cannot rebuild the state they came from. Run `make backfill` (it writes "
                "the manifest), then start the live job again."
            )
        return None
    info = json.loads(manifest.read_text())
    path = Path(info["events_path"])
    if not path.exists() or pq.ParquetFile(path).metadata.num_rows != info["events"]:
        raise HistoryError(
            f"the event log {path} changed since the backfill that wrote {settings.offline_dir} "
            f"({info['events']} rows then): run `make backfill` again before the live job"
        )
    return History(path, int(info["events"]))


@dataclass(frozen=True)
class SourceState:
    """Where the live source stands, snapshotted for recovery. Phases, in order:
    history rows ``history_done`` of the log; stream entries up to ``catch_up_end`` (delivered
    by an earlier run: replayed, or processed if still pending); then live (``last``)."""

    history_done: int = 0
    catch_up_end: str | None = None
    last: str | None = None
    live: bool = False


class _StreamPartition(StatefulSourcePartition[list[dict[str, Any]], SourceState]):
    def __init__(
        self,
        settings: Settings,
        partition: int,
        consumer: str,
        resume: SourceState | None,
        idle_stop_s: float | None,
        history: History | None,
    ) -> None:
        self._s = settings
        self._partition = partition
        self._stream = partition_streams(settings.events_stream, settings.event_partitions)[
            partition
        ]
        self._client = redis_client(settings)
        self._consumer = consumer
        self._idle_stop_s = idle_stop_s
        self._idle_since: float | None = None
        self._backoff_until = 0.0
        self._lag_checked = 0.0
        self._beat_at = 0.0
        self._history = history
        self._pending_ids: set[str] = set()
        ensure_group(self._client, self._stream, settings.consumer_group)
        self._backlog_end: str | None = None
        if resume is not None and not isinstance(resume, SourceState):
            raise HistoryError(  # an entry id: a snapshot of the job before it kept history
                "the recovery folder holds a snapshot of an older version of the live job; "
                "delete it: the job then rebuilds its state from the backfilled log"
            )
        if resume is None or (not resume.live and resume.catch_up_end is None):
            # No snapshot (first start, or started without its recovery folder): rebuild
            # state from the history log, then from what the group already delivered.
            info = group_info(self._client, self._stream, settings.consumer_group)
            end = entry_id(info["last-delivered-id"]) if info else "0-0"
            done = resume.history_done if resume else 0
            resume = SourceState(history_done=done, catch_up_end=end, last=None)
        if resume.live:
            # Re-read what was delivered after the last snapshot: its rows may be missing.
            info = group_info(self._client, self._stream, settings.consumer_group)
            self._backlog_end = entry_id(info["last-delivered-id"]) if info else None
        if not resume.live:
            self._claim_pending()
        self._state = resume
        self._rows = self._history_rows(resume.history_done) if history is not None else None

    def _claim_pending(self) -> None:
        """Take over every delivered-but-unacknowledged entry (XAUTOCLAIM, Redis >= 6.2): a job
        that died before its first snapshot left them pending; the catch-up processes them."""
        s, start = self._s, "0-0"
        while True:
            got = retry_redis(
                lambda st=start: self._client.xautoclaim(
                    self._stream,
                    s.consumer_group,
                    self._consumer,
                    0,
                    st,
                    count=1000,
                )
            )  # [next cursor, [(id, fields)], (Redis 7: deleted ids)]
            self._pending_ids.update(entry_id(i) for i, _ in got[1])
            start = entry_id(got[0])
            if start == "0-0":
                break
        if self._pending_ids:
            log.info("claimed %d pending entries to process again", len(self._pending_ids))

    def _history_rows(self, offset: int) -> Iterator[list[dict[str, Any]]]:
        """The history log's rows from ``offset`` on (an offset counts every row of the log),
        only those of this partition's users when the bus has several partitions."""
        assert self._history is not None
        left = self._history.events - offset
        parts = self._s.event_partitions
        for rows in iter_log_batches(self._history.path, offset, self._s.history_batch_rows):
            rows = rows[:left]
            left -= len(rows)
            mine = [r for r in rows if partition_of(r[n.USER_ID], parts) == self._partition]
            for row in mine:
                row[REPLAY] = True
            yield mine, len(rows)
            if left <= 0:
                return

    def next_batch(self) -> list[list[dict[str, Any]]]:
        """The next batch as ONE element (the dataflow works on batches: stream.flow)."""
        state = self._state
        if self._rows is not None:
            batch, read = next(self._rows, (None, 0))
            if batch is not None:
                self._state = replace(state, history_done=state.history_done + read)
                stream_metrics().history_replayed.inc(len(batch))
                return [batch] if batch else []
            self._rows = None
        out = self._catch_up() if not state.live else self._read_live()
        return [out] if out else []

    def _catch_up(self) -> list[dict[str, Any]]:
        """Stream entries an earlier run was delivered: acknowledged ones only rebuild state
        (their rows are written), pending ones are processed again (and acknowledged)."""
        s, state = self._s, self._state
        start = f"({state.last}" if state.last else "-"
        entries = []
        if state.catch_up_end and state.catch_up_end != "0-0":
            entries = retry_redis(
                lambda: self._client.xrange(
                    self._stream, start, state.catch_up_end, count=s.stream_batch
                )
            )
        if not entries:
            self._state = replace(state, live=True)
            return []
        self._state = replace(state, last=entry_id(entries[-1][0]))
        out = [
            decode_entry(i, f, entry_id(i) not in self._pending_ids, self._partition)
            for i, f in entries
        ]
        replayed = sum(1 for e in out if e.get(REPLAY))
        stream_metrics().history_replayed.inc(replayed)
        stream_metrics().events_in.inc(len(out) - replayed)
        return out

    def _read_live(self) -> list[dict[str, Any]]:
        s = self._s
        if time.monotonic() - self._beat_at > HEARTBEAT_S:  # "reading, caught up with history"
            self._beat_at = time.monotonic()
            with contextlib.suppress(redis.RedisError):
                heartbeat(self._client, s.events_stream, self._consumer)
        try:
            if self._backlog_end is not None:
                after = self._state.last or self._state.catch_up_end
                start = f"({after}" if after and after != "0-0" else "-"
                entries = self._client.xrange(
                    self._stream, start, self._backlog_end, count=s.stream_batch
                )
                if not entries:
                    self._backlog_end = None
                    return []
            else:
                got = self._client.xreadgroup(
                    s.consumer_group, self._consumer, {self._stream: ">"}, count=s.stream_batch
                )
                entries = got[0][1] if got else []
        except redis.RedisError as exc:
            log.warning("event stream unavailable (%s); retrying", exc)
            if "NOGROUP" in str(exc):  # Redis came back without its data: start the group anew
                with contextlib.suppress(redis.RedisError):
                    ensure_group(self._client, self._stream, s.consumer_group)
            self._backoff_until = time.monotonic() + 1.0
            return []
        if not entries:
            now = time.monotonic()
            self._idle_since = self._idle_since or now
            if self._idle_stop_s is not None and now - self._idle_since >= self._idle_stop_s:
                raise StopIteration
            return []
        self._idle_since = None
        self._state = replace(self._state, last=entry_id(entries[-1][0]))
        metrics = stream_metrics()
        metrics.events_in.inc(len(entries))
        if time.monotonic() - self._lag_checked > 1.0:
            self._lag_checked = time.monotonic()
            with contextlib.suppress(redis.RedisError):
                progress = group_progress(self._client, self._stream, s.consumer_group)
                metrics.set_lag(self._partition, progress.lag)
        return [decode_entry(i, f, partition=self._partition) for i, f in entries]

    def next_awake(self) -> datetime | None:
        backoff_s = self._backoff_until - time.monotonic()
        if backoff_s > 0:  # Redis was away: try again when the back-off ends
            return datetime.now(UTC) + timedelta(seconds=backoff_s)
        if self._idle_since is not None:
            return datetime.now(UTC) + timedelta(milliseconds=IDLE_POLL_MS)
        return None

    def snapshot(self) -> SourceState:
        return self._state

    def close(self) -> None:
        self._client.close()


class RedisStreamSource(FixedPartitionedSource[list[dict[str, Any]], SourceState]):
    """Live events from the event bus ``settings.events_stream`` via a consumer group: one
    source partition per bus partition (:func:`core.bus.partition_streams`), continuing from
    ``history`` (the backfilled log): without a recovery snapshot each first replays its
    users' rows of that log and the entries its group already delivered, to rebuild every
    user's and item's state where it was, then reads new entries.

    Each element is a batch: the entries of one XREADGROUP (``IG_STREAM_BATCH``) or one
    block of history rows. ``idle_stop_s`` ends the job after that long without new entries
    (tests, catch-up runs); ``None`` runs until stopped.
    """

    def __init__(
        self,
        settings: Settings,
        consumer: str = "features-0",
        idle_stop_s: float | None = None,
        history: History | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.idle_stop_s = idle_stop_s
        self.history = history

    def list_parts(self) -> list[str]:
        return partition_streams(self.settings.events_stream, self.settings.event_partitions)

    def build_part(
        self, step_id: str, for_part: str, resume_state: SourceState | None
    ) -> _StreamPartition:
        return _StreamPartition(
            self.settings,
            self.list_parts().index(for_part),
            self.consumer,
            resume_state,
            self.idle_stop_s,
            self.history,
        )


class OnlineWriter:
    """Feast online writes of feature rows: one ``online_write_batch`` of Feast's provider
    (the call ``FeatureStore.push`` and ``materialize`` end in) per view and batch.

    ``FeatureStore.push`` per view and batch cost 250 µs an event, measured: it looks the view
    up in the registry on every call (rebuilding ``FeatureView``, ``Field`` objects whose
    ``@typechecked`` constructors typeguard checks), goes through pandas and Arrow, and asks
    the registry for feature services to precompute (none here). This writer looks the views
    up once and turns rows into Feast's protos directly (``python_values_to_proto_values``,
    Feast's own conversion); the provider's write is unchanged: the Redis store still skips a
    row whose timestamp is not newer than the stored one.

    A row's online timestamp is its created time + 1 day (``CREATED_OFFSET_US``): Feast skips
    an online write whose timestamp is not newer than the stored one, which would drop the
    2nd..nth update at one event time (an invoice's lines); created time + 1 day is the event
    time plus the entity's event sequence in µs, increasing per entity. Offline rows keep
    exact times. A feature view applied while the job runs is seen at its next start.
    """

    def __init__(self, store: Any) -> None:
        from feast.infra.provider import get_provider

        self._to_proto = proto_values
        self._config = store.config
        self._provider = get_provider(store.config)
        self._views = {fv.name: fv for fv in store.list_feature_views()}
        self._columns = {
            name: [(f.name, f.dtype.to_value_type()) for f in fv.features]
            for name, fv in self._views.items()
        }
        self._keys = {
            name: [(c.name, c.dtype.to_value_type()) for c in fv.entity_columns]
            for name, fv in self._views.items()
        }

    def write(self, view: str, rows: list[dict[str, Any]]) -> None:
        """Write ``rows`` (at most one per entity) of ``view`` to the online store."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey

        if not rows:
            return
        (key, key_type), *more = self._keys[view]
        assert not more, f"{view}: one join key expected"
        ids = self._to_proto([r[key] for r in rows], key_type)
        columns = [
            (name, self._to_proto([r[name] for r in rows], value_type))
            for name, value_type in self._columns[view]
        ]
        data = [
            (
                EntityKey(join_keys=[key], entity_values=[ids[i]]),
                {name: values[i] for name, values in columns},
                _utc(row[n.CREATED_TIMESTAMP] + CREATED_OFFSET_US),
                _utc(row[n.CREATED_TIMESTAMP]),
            )
            for i, row in enumerate(rows)
        ]
        self._provider.online_write_batch(self._config, self._views[view], data, None)


@cache
def _direct_protos() -> dict[Any, Callable[[Any], Any]]:
    """Value type -> a builder of its ValueProto, for the types the feature views use."""
    from feast.protos.feast.types import Value_pb2 as v
    from feast.value_type import ValueType as T

    def scalar(field: str) -> Callable[[Any], Any]:
        return lambda x: v.Value() if x is None else v.Value(**{field: x})

    def listed(field: str, kind: Any) -> Callable[[Any], Any]:
        return lambda x: v.Value() if x is None else v.Value(**{field: kind(val=x)})

    return {
        T.STRING: scalar("string_val"),
        T.INT64: scalar("int64_val"),
        T.DOUBLE: scalar("double_val"),
        T.STRING_LIST: listed("string_list_val", v.StringList),
        T.DOUBLE_LIST: listed("double_list_val", v.DoubleList),
        T.INT64_LIST: listed("int64_list_val", v.Int64List),
    }


def proto_values(values: list[Any], value_type: Any) -> list[Any]:
    """Feast's ``python_values_to_proto_values`` for plain Python values (str, int, float,
    their lists, None), built directly: Feast's general conversion (type inference, numpy
    and pandas cases) cost more than the write itself. Other types go through Feast's."""
    build = _direct_protos().get(value_type)
    if build is None:
        from feast.type_map import python_values_to_proto_values

        return python_values_to_proto_values(values, value_type)
    return [build(x) for x in values]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


# Marks of written batch pieces, one set per batch (members: the pieces' names), in Redis so
# sink partitions in any process, and any restart, see one record. The piece that makes the
# set whole deletes it and reports the batch complete; marking a piece again (at-least-once
# delivery after recovery) adds nothing. A set left incomplete by a crash (the batch is
# re-read, and may be cut differently) expires. Atomic (a script): of two partitions marking
# a batch's last two pieces at once, exactly one completes it.
_MARK_PIECES = """
local done = {}
for i = 1, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[2 * i])
  if redis.call('SCARD', KEYS[i]) >= tonumber(ARGV[2 * i - 1]) then
    redis.call('DEL', KEYS[i])
    done[#done + 1] = i
  else
    redis.call('EXPIRE', KEYS[i], ARGV[#ARGV])
  end
end
return done
"""
MARKS_TTL_S = 7 * 86_400


def sides_key(stream: str) -> str:
    """The prefix of the piece marks of the bus ``stream`` (see ``_MARK_PIECES``); one hash
    tag, so a batch's marks and the script that reads them share a Redis Cluster slot."""
    return f"{{{stream}}}:sides"


def open_marks(client: redis.Redis, stream: str) -> list[str]:
    """The marks of batches not yet complete (a test or a clean-up; SCAN, not for hot paths)."""
    return [entry_id(k) for k in client.scan_iter(match=f"{sides_key(stream)}:*", count=1000)]


class SideMarks:
    """Which batches have all their pieces written: ``complete`` marks pieces and returns
    the batches they complete (each batch once, whichever partition or process wrote its
    last piece)."""

    def __init__(self, client: redis.Redis, stream: str) -> None:
        self._prefix = sides_key(stream)
        self._script = client.register_script(_MARK_PIECES)

    def complete(self, pieces: list[tuple[BatchInfo, str]]) -> list[BatchInfo]:
        """``pieces``: (batch, piece name) written; returns the batches now complete."""
        if not pieces:
            return []
        keys = [f"{self._prefix}:{info.tag}" for info, _ in pieces]
        args: list[Any] = [a for info, piece in pieces for a in (info.pieces, piece)]
        got = retry_redis(lambda: self._script(keys=keys, args=[*args, MARKS_TTL_S]))
        return [pieces[int(i) - 1][0] for i in got]


class _LivePartition(StatelessSinkPartition[KeyedRows]):
    def __init__(self, settings: Settings, part: str) -> None:
        from core.feast_store import open_store

        self._s = settings
        self._part = part
        self._online = OnlineWriter(open_store(settings))
        self._streams = partition_streams(settings.events_stream, settings.event_partitions)
        self._compactor = Compactor(
            settings.offline_dir,
            list(n.VIEW_FEATURES),
            f"{LIVE_PREFIX}{part}",
            settings.offline_compact_files,
        )
        self._client = redis_client(settings)
        self._marks = SideMarks(self._client, settings.events_stream)

    def write_batch(self, items: list[KeyedRows]) -> None:
        """Every row offline (one Parquet file per view), each entity's latest row online
        (one Feast write per view), then the batches these pieces complete acknowledged."""
        values = [side for _key, side in items]
        by_view: dict[str, list[dict[str, Any]]] = {}
        for side in values:
            for view, row in side.rows:
                if view != n.FORGOTTEN:  # a forget marker: the batch's info names the entry
                    by_view.setdefault(view, []).append(row)
        for view, batch in by_view.items():
            key = n.VIEW_ENTITY_KEY[view]
            rows = write_partition(self._s.offline_dir, view, batch, f"{LIVE_PREFIX}{self._part}")
            latest = list({r[key]: r for r in rows}.values())  # one write per entity
            retry_redis(lambda v=view, r=latest: self._online.write(v, r))  # type: ignore[misc]
            stream_metrics().rows_out.inc(len(rows))
        done = self._marks.complete([(v.info, v.piece) for v in values if v.info is not None])
        if done:
            self._acknowledge(done)
        if by_view:
            self._compactor.poke()

    def _acknowledge(self, done: list[BatchInfo]) -> None:
        """XACK the events of complete batches; XDEL forget control events after."""
        done_ids = [info.ids for info in done]
        pipe = self._client.pipeline(transaction=False)
        for k, entries in by_partition(i for ids in done_ids for i in ids).items():
            pipe.xack(self._streams[k], self._s.consumer_group, *entries)
        # a forget request names the shopper: once it has been carried out, it goes too
        for k, ids in by_partition(i for info in done for i in info.forgets).items():
            pipe.xdel(self._streams[k], *ids)
        retry_redis(pipe.execute)
        metrics = stream_metrics()
        for fresh_s, times in freshness(time.time() * 1000, (i for ids in done_ids for i in ids)):
            metrics.freshness.observe(fresh_s, times)
            metrics.freshness_samples.extend(repeat(fresh_s, times))
        metrics.events_acked.inc(sum(map(len, done_ids)))

    def close(self) -> None:
        self._compactor.close()
        self._client.close()


class LiveFeatureSink(DynamicSink[KeyedRows]):
    """Offline Parquet partitions + Feast online writes, then XACK of completed batches.

    One partition per worker, writing the rows that worker computed: a state bucket lives
    on one worker (Bytewax routes it by key), so one partition writes every row of a user or
    an item, in order, and rows never cross workers again. Which pieces are written is in
    Redis (:class:`SideMarks` joins a batch's pieces), so the sink keeps no state."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LivePartition:
        return _LivePartition(self.settings, f"w{worker_index}")


class _DeadLetterStreamPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, settings: Settings) -> None:
        self._s = settings
        self._client = redis_client(settings)

    def write_batch(self, items: list[DeadLetter]) -> None:
        pipe = self._client.pipeline(transaction=False)
        ids = []
        for d in items:
            raw = d.raw if isinstance(d.raw, dict) else {"value": d.raw}
            pipe.xadd(
                self._s.dead_letter_stream,
                {"reason": d.reason, "raw": json.dumps(raw, default=str)},
            )
            if raw.get(STREAM_ID) and not d.side_of_event:  # a late side: its batch acks it
                ids.append(raw[STREAM_ID])
        streams = partition_streams(self._s.events_stream, self._s.event_partitions)
        for k, entries in by_partition(ids).items():
            pipe.xack(streams[k], self._s.consumer_group, *entries)
        retry_redis(pipe.execute)
        stream_metrics().dead_letters.inc(len(items))


class DeadLetterStreamSink(DynamicSink[DeadLetter]):
    """Malformed live events go to ``settings.dead_letter_stream`` with their reason."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> _DeadLetterStreamPartition:
        return _DeadLetterStreamPartition(self.settings)


def freshness(now_ms: float, source_ids: Iterable[str]) -> Iterator[tuple[float, int]]:
    """(seconds from XADD to ``now_ms``, how many) of acknowledged entries, a pair per run of
    ids added in one millisecond: an entry id starts with its XADD wall-clock time in ms."""
    head, fresh_s, times = None, 0.0, 0
    for sid in source_ids:
        ms = sid.partition("-")[0]
        if ms != head:
            if times:
                yield fresh_s, times
            head, fresh_s, times = ms, max(now_ms - int(ms), 0) / 1000, 0
        times += 1
    if times:
        yield fresh_s, times


def live_flow(
    settings: Settings,
    idle_stop_s: float | None = None,
    consumer: str = "features-0",
    history: History | None | bool = True,
    workers: int = 1,
):
    """The feature dataflow wired to the event bus (same steps as backfill); ``workers``: the
    job's worker count, all processes together (it places state: :mod:`stream.routing`).

    ``history=True`` continues from the last backfill (:func:`backfill_history`; raises
    :class:`HistoryError` when that cannot be done safely); ``False`` starts from empty state
    (only for a project without history, e.g. a benchmark); or an explicit :class:`History`."""
    from stream.flow import build_flow, default_params

    if history is True:
        history = backfill_history(settings)
    return build_flow(
        RedisStreamSource(settings, consumer, idle_stop_s, history or None),
        LiveFeatureSink(settings),
        DeadLetterStreamSink(settings),
        params=default_params(settings),
        future_tolerance_s=settings.future_tolerance_s,
        buckets=settings.state_buckets,
        workers=workers,
        streams=tuple(partition_streams(settings.events_stream, settings.event_partitions)),
    )
