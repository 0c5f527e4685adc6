"""The live mode of the feature dataflow: Redis Stream in, Feast push + Parquet out.

- :class:`RedisStreamSource` reads the event bus through a consumer group; its resume state is
  the last entry id it emitted, so a recovered job re-reads what followed its last snapshot.
- :class:`LiveFeatureSink` writes each batch offline (new Parquet partitions) and online
  (Feast push, PushMode.ONLINE, one push per view per batch), then XACKs every event whose
  rows are all written. Rows are keyed by entry id, so one partition sees all rows of an event.
- :class:`DeadLetterStreamSink` records malformed events with their reason in a stream.
Both sinks are idempotent: a rewrite after a restart writes the same values again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import redis
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)

from core import names as n
from core.redis_server import redis_client
from core.settings import Settings
from stream.io import write_partition
from stream.metrics import stream_metrics
from stream.steps import (
    CREATED_OFFSET_US,
    INVALID,
    ROWS_PER_EVENT,
    STREAM_ID,
    DeadLetter,
    FeatureRow,
)

log = logging.getLogger(__name__)
EVENT_FIELD = "event"


def retry_redis(write: Callable[[], Any], pause_s: float = 1.0) -> Any:
    """Run an idempotent Redis write, waiting out a lost Redis instead of crashing the job."""
    while True:
        try:
            return write()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            log.warning("redis unavailable (%s); retrying in %.0f s", exc, pause_s)
            stream_metrics().redis_retries.inc()
            time.sleep(pause_s)


def publish(client: redis.Redis, stream: str, events: Iterable[dict[str, Any]]) -> list[str]:
    """XADD events (JSON) in one pipeline; returns their entry ids."""
    pipe = client.pipeline(transaction=False)
    for event in events:
        pipe.xadd(stream, {EVENT_FIELD: json.dumps(event, default=str)})
    return [i.decode() if isinstance(i, bytes) else i for i in pipe.execute()]


def ensure_group(client: redis.Redis, stream: str, group: str) -> None:
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def group_info(client: redis.Redis, stream: str, group: str) -> dict[str, Any] | None:
    """XINFO GROUPS entry of ``group`` on ``stream`` (pending, lag, last-delivered-id, ...)."""
    if not client.exists(stream):
        return None
    return next((g for g in client.xinfo_groups(stream) if g["name"].decode() == group), None)


def _decode(entry_id: bytes | str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    sid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    payload = fields.get(EVENT_FIELD.encode())
    try:
        event = json.loads(payload) if payload is not None else None
    except (ValueError, UnicodeDecodeError) as exc:
        return {STREAM_ID: sid, INVALID: f"bad JSON: {exc}", "payload": repr(payload)[:500]}
    if not isinstance(event, dict):
        return {STREAM_ID: sid, INVALID: "event is not a JSON object", "payload": event}
    return {**event, STREAM_ID: sid}


class _StreamPartition(StatefulSourcePartition[dict[str, Any], str | None]):
    def __init__(
        self, settings: Settings, consumer: str, resume: str | None, idle_stop_s: float | None
    ) -> None:
        self._s = settings
        self._client = redis_client(settings)
        self._consumer = consumer
        self._last = resume
        self._idle_stop_s = idle_stop_s
        self._idle_since: float | None = None
        self._backoff_until = 0.0
        self._lag_checked = 0.0
        ensure_group(self._client, settings.events_stream, settings.consumer_group)
        self._backlog_end: str | None = None
        # Without a snapshot, first take back this consumer's delivered-but-unacked entries.
        self._own_pending_from: str | None = "0" if resume is None else None
        if resume is not None:  # re-read what was delivered after the last snapshot
            mine = group_info(self._client, settings.events_stream, settings.consumer_group)
            self._backlog_end = mine["last-delivered-id"].decode() if mine else None

    def next_batch(self) -> list[dict[str, Any]]:
        s = self._s
        try:
            if self._backlog_end is not None:
                start = f"({self._last}" if self._last else "-"
                entries = self._client.xrange(
                    s.events_stream, start, self._backlog_end, count=s.stream_batch
                )
                if not entries:
                    self._backlog_end = None
                    return []
            else:
                got = self._client.xreadgroup(
                    s.consumer_group, self._consumer, {s.events_stream: ">"}, count=s.stream_batch
                )
                entries = got[0][1] if got else []
        except redis.RedisError as exc:
            log.warning("event stream unavailable (%s); retrying", exc)
            if "NOGROUP" in str(exc):  # Redis came back without its data: start the group anew
                with contextlib.suppress(redis.RedisError):
                    ensure_group(self._client, s.events_stream, s.consumer_group)
            self._backoff_until = time.monotonic() + 1.0
            return []
        if not entries:
            now = time.monotonic()
            self._idle_since = self._idle_since or now
            if self._idle_stop_s is not None and now - self._idle_since >= self._idle_stop_s:
                raise StopIteration
            return []
        self._idle_since = None
        self._last = entries[-1][0].decode()
        metrics = stream_metrics()
        metrics.events_in.inc(len(entries))
        if time.monotonic() - self._lag_checked > 1.0:
            self._lag_checked = time.monotonic()
            with contextlib.suppress(redis.RedisError):
                mine = group_info(self._client, s.events_stream, s.consumer_group)
                metrics.consumer_lag.set((mine or {}).get("lag") or 0)
        return [_decode(i, f) for i, f in entries]

    def next_awake(self) -> datetime | None:
        if self._idle_since is not None or self._backoff_until > time.monotonic():
            return datetime.now(UTC) + timedelta(milliseconds=50)
        return None

    def snapshot(self) -> str | None:
        return self._last

    def close(self) -> None:
        self._client.close()


class RedisStreamSource(FixedPartitionedSource[dict[str, Any], str | None]):
    """Live events from the Redis Stream ``settings.events_stream`` via a consumer group.

    ``idle_stop_s`` ends the job after that long without new entries (tests, catch-up runs);
    ``None`` runs until stopped.
    """

    def __init__(
        self, settings: Settings, consumer: str = "features-0", idle_stop_s: float | None = None
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.idle_stop_s = idle_stop_s

    def list_parts(self) -> list[str]:
        return [self.settings.events_stream]

    def build_part(self, step_id: str, for_part: str, resume_state: str | None) -> _StreamPartition:
        return _StreamPartition(self.settings, self.consumer, resume_state, self.idle_stop_s)


def _push_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows for Feast's push. Feast skips an online write whose timestamp is not newer than
    the stored one, which would drop the 2nd..nth update at one event time (an invoice's
    lines). Online, a row's timestamp is therefore its event time plus the entity's event
    sequence in µs (= created + 1 day): increasing per entity. Offline rows keep exact times."""
    frame = pd.DataFrame(rows)
    frame[n.EVENT_TIMESTAMP] = frame[n.CREATED_TIMESTAMP] + CREATED_OFFSET_US
    for col in (n.EVENT_TIMESTAMP, n.CREATED_TIMESTAMP):
        frame[col] = pd.to_datetime(frame[col], unit="us", utc=True)
    return frame


class _LivePartition(StatefulSinkPartition[tuple[str, FeatureRow], dict[str, int]]):
    def __init__(self, settings: Settings, part: str, pending: dict[str, int] | None) -> None:
        from core.feast_store import open_store

        self._s = settings
        self._part = part
        self._store = open_store(settings)
        self._client = redis_client(settings)
        self._pending: Counter[str] = Counter(pending or {})
        from feast.data_source import PushMode

        self._online = PushMode.ONLINE

    def write_batch(self, values: list[tuple[str, FeatureRow]]) -> None:
        by_view: dict[str, list[dict[str, Any]]] = {}
        for _source, (view, row) in values:
            by_view.setdefault(view, []).append(row)
        for view, batch in by_view.items():
            key = n.VIEW_ENTITY_KEY[view]
            rows = write_partition(self._s.offline_dir, view, batch, f"part-live-{self._part}")
            latest = {r[key]: r for r in rows}  # one online write per entity and batch
            frame = _push_frame(list(latest.values()))
            retry_redis(
                lambda v=view, f=frame: self._store.push(  # type: ignore[misc]
                    n.push_source_name(v), f, to=self._online
                )
            )
            stream_metrics().rows_out.inc(len(rows))
        self._pending.update(source for source, _ in values)
        done = [sid for sid, k in self._pending.items() if k >= ROWS_PER_EVENT]
        if done:
            retry_redis(
                lambda: self._client.xack(self._s.events_stream, self._s.consumer_group, *done)
            )
            now_ms = time.time() * 1000
            metrics = stream_metrics()
            for sid in done:
                del self._pending[sid]
                # An entry id starts with the XADD wall-clock time in milliseconds.
                fresh_s = max(now_ms - int(sid.split("-")[0]), 0) / 1000
                metrics.freshness.observe(fresh_s)
                metrics.freshness_samples.append(fresh_s)
            metrics.events_acked.inc(len(done))

    def snapshot(self) -> dict[str, int]:
        return dict(self._pending)


class LiveFeatureSink(FixedPartitionedSink[tuple[str, FeatureRow], dict[str, int]]):
    """Offline Parquet partitions + Feast online push, then XACK of completed events."""

    def __init__(self, settings: Settings, partitions: int = 1) -> None:
        self.settings = settings
        self.partitions = partitions

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self.partitions)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: dict[str, int] | None
    ) -> _LivePartition:
        return _LivePartition(self.settings, for_part, resume_state)


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
            if raw.get(STREAM_ID):
                ids.append(raw[STREAM_ID])
        if ids:
            pipe.xack(self._s.events_stream, self._s.consumer_group, *ids)
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


def live_flow(
    settings: Settings,
    idle_stop_s: float | None = None,
    partitions: int = 1,
    consumer: str = "features-0",
):
    """The feature dataflow wired to the event bus (same steps as backfill)."""
    from stream.flow import build_flow

    return build_flow(
        RedisStreamSource(settings, consumer, idle_stop_s),
        LiveFeatureSink(settings, partitions),
        DeadLetterStreamSink(settings),
        future_tolerance_s=settings.future_tolerance_s,
    )
