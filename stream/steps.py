"""Pure step functions of the feature dataflow, unit-tested on plain values.

Each function here is the body of one Bytewax step of the same name in :mod:`stream.flow`.
Timestamps inside the flow are integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core import names as n

US = 1_000_000
FeatureRow = tuple[str, dict[str, Any]]  # (view name, row)
# Live events carry the id of their Redis Stream entry under this key; a source that could
# not decode an entry sends {STREAM_ID: id, INVALID: reason} instead.
STREAM_ID = "_stream_id"
INVALID = "_invalid"


@dataclass(frozen=True, slots=True)
class Event:
    """One validated behaviour event."""

    user_id: str
    item_id: str
    event_type: str
    ts_us: int
    value: float = 1.0
    session_id: str | None = None
    category_id: str | None = None
    source_id: str | None = None  # the Redis Stream entry id, for live events


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not become an :class:`Event`, and why."""

    reason: str
    raw: Any


def _to_us(value: Any) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta = value - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds
    if isinstance(value, bool):
        raise TypeError("a boolean is not a timestamp")
    if isinstance(value, int | float):
        return int(round(float(value) * US))  # unix seconds
    if isinstance(value, str):
        return _to_us(datetime.fromisoformat(value.replace("Z", "+00:00")))
    raise TypeError(f"unsupported timestamp type {type(value).__name__}")


def _opt_str(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def parse_event(raw: Mapping[str, Any], max_ts_us: int | None = None) -> Event | DeadLetter:
    """A canonical event mapping -> :class:`Event`, or a :class:`DeadLetter` saying why not."""
    if not isinstance(raw, Mapping):
        return DeadLetter("event is not an object", raw)
    if raw.get(INVALID):
        return DeadLetter(str(raw[INVALID]), raw)
    ids = {}
    for key in (n.USER_ID, n.ITEM_ID):
        ids[key] = _opt_str(raw.get(key))
        if ids[key] is None:
            return DeadLetter(f"missing {key}", raw)
    etype = _opt_str(raw.get(n.EVENT_TYPE))
    if etype is None or etype.lower() not in n.EVENT_TYPES:
        return DeadLetter(f"unknown event_type {etype!r}", raw)
    if raw.get(n.EVENT_TIMESTAMP) is None:
        return DeadLetter("missing event_timestamp", raw)
    try:
        ts_us = _to_us(raw[n.EVENT_TIMESTAMP])
    except (TypeError, ValueError, OverflowError) as exc:
        return DeadLetter(f"bad event_timestamp: {exc}", raw)
    if max_ts_us is not None and ts_us > max_ts_us:
        return DeadLetter("event_timestamp in the future", raw)
    value = raw.get(n.VALUE)
    try:
        value = 1.0 if value is None else float(value)
    except (TypeError, ValueError):
        return DeadLetter(f"value is not a number: {value!r}", raw)
    if math.isnan(value):
        value = 1.0
    return Event(
        ids[n.USER_ID],
        ids[n.ITEM_ID],
        etype.lower(),
        ts_us,
        value,
        _opt_str(raw.get(n.SESSION_ID)),
        _opt_str(raw.get(n.CATEGORY_ID)),
        _opt_str(raw.get(STREAM_ID)),
    )


@dataclass
class WindowCounts:
    """Trailing-window counts of each event type: events in ``(t - window, t]``."""

    windows: dict[str, int]
    times: dict[str, list[int]] = field(default_factory=dict)
    total: int = 0  # events ever added: also the entity's row sequence number
    latest_us: int = 0  # the latest event time added

    def add(self, event_type: str, ts_us: int) -> None:
        """Record one event (late ones are inserted in order) and evict what no window holds."""
        times = self.times.setdefault(event_type, [])
        if times and ts_us < times[-1]:
            insort(times, ts_us)
        else:
            times.append(ts_us)
        self.total += 1
        self.latest_us = max(self.latest_us, ts_us)
        cut = bisect_right(times, self.latest_us - max(self.windows.values()) * US)
        if cut:
            del times[:cut]

    def counts(self, now_us: int) -> dict[str, int]:
        """Counts per ``<type plural>_<window>`` at ``now_us``."""
        out: dict[str, int] = {}
        for etype in n.EVENT_TYPES:
            times = self.times.get(etype, ())
            hi = bisect_right(times, now_us) if times else 0
            for wname, secs in self.windows.items():
                lo = bisect_right(times, now_us - secs * US) if times else 0
                out[n.count_feature(etype, wname)] = hi - lo
        return out


@dataclass
class DecayedAffinity:
    """Category scores that halve every ``half_life_us`` without new events."""

    half_life_us: int
    scores: dict[str, float] = field(default_factory=dict)
    as_of_us: int = 0
    max_keys: int = 64

    def add(self, category: str, weight: float, ts_us: int) -> None:
        if ts_us > self.as_of_us:
            factor = 0.5 ** ((ts_us - self.as_of_us) / self.half_life_us)
            self.scores = {k: v * factor for k, v in self.scores.items() if v * factor > 1e-6}
            self.as_of_us = ts_us
        else:  # a late event: its weight decays to the current time instead
            weight *= 0.5 ** ((self.as_of_us - ts_us) / self.half_life_us)
        self.scores[category] = self.scores.get(category, 0.0) + weight
        if len(self.scores) > self.max_keys:
            keep = sorted(self.scores.items(), key=lambda kv: -kv[1])[: self.max_keys]
            self.scores = dict(keep)

    def top(self, k: int) -> list[tuple[str, float]]:
        return sorted(self.scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


@dataclass
class UserState:
    behavior: WindowCounts
    affinity: DecayedAffinity
    recent: list[str] = field(default_factory=list)  # most recent first, distinct


@dataclass
class ItemState:
    counts: WindowCounts


@dataclass(frozen=True)
class FeatureParams:
    """Knobs of the feature steps (from settings; part of the dataflow's definition)."""

    recent_items_n: int = 20
    top_categories_n: int = 5
    affinity_half_life_hours: float = 168.0
    allowed_lateness_s: float = 3600.0


CREATED_OFFSET_US = 86_400 * US


def _stamps(ts_us: int, seq: int) -> tuple[int, int]:
    """(event time, created time) of a feature row.

    Feast orders rows of one entity by (event time, created time) and hides rows whose created
    time is after the entity timestamp. A row computed at event time ``t`` is known at ``t``,
    so created = ``t - 1 day + seq µs``: never after ``t`` and, through the per-entity
    sequence, increasing between rows that share an event time.
    """
    return ts_us, ts_us - CREATED_OFFSET_US + seq


def watermark(
    latest_us: int | None, event: Event, allowed_lateness_us: int
) -> tuple[int, Event | DeadLetter]:
    """The stream's event-time watermark: the latest event time seen minus the allowed lateness.

    An event at or after the watermark is accepted, even out of order (window counts insert it
    in time order, affinity decays its weight to the entity's current time). An event before it
    goes to the dead letters, so one very old event cannot rewrite features.
    """
    latest = event.ts_us if latest_us is None else max(latest_us, event.ts_us)
    if event.ts_us < latest - allowed_lateness_us:
        behind = (latest - event.ts_us) / US
        return latest, DeadLetter(
            f"late event: {behind:.0f} s behind the latest event time "
            f"(allowed {allowed_lateness_us / US:.0f} s)",
            _as_raw(event),
        )
    return latest, event


def _as_raw(event: Event) -> dict[str, Any]:
    raw = {
        n.USER_ID: event.user_id,
        n.ITEM_ID: event.item_id,
        n.EVENT_TYPE: event.event_type,
        n.EVENT_TIMESTAMP: event.ts_us / US,
        n.VALUE: event.value,
        n.SESSION_ID: event.session_id,
        n.CATEGORY_ID: event.category_id,
    }
    if event.source_id is not None:
        raw[STREAM_ID] = event.source_id
    return raw


# Rows each event produces: user_behavior + user_interest (user_features), item_stats.
ROWS_PER_EVENT = 3


def user_features(
    state: UserState | None, event: Event, params: FeatureParams
) -> tuple[UserState, list[FeatureRow]]:
    """Update a user's state with one event; emit their ``user_behavior`` and ``user_interest``."""
    if state is None:
        state = UserState(
            WindowCounts(dict(n.USER_WINDOWS)),
            DecayedAffinity(int(params.affinity_half_life_hours * 3600 * US)),
        )
    previous_us = state.behavior.latest_us
    state.behavior.add(event.event_type, event.ts_us)
    now = state.behavior.latest_us
    interest = n.EVENT_WEIGHTS[event.event_type] > 0  # an impression shows no interest
    if interest and event.category_id is not None:
        state.affinity.add(event.category_id, n.EVENT_WEIGHTS[event.event_type], event.ts_us)
    if interest and event.ts_us >= previous_us:
        if event.item_id in state.recent:
            state.recent.remove(event.item_id)
        state.recent.insert(0, event.item_id)
        del state.recent[params.recent_items_n :]
    ts, created = _stamps(now, state.behavior.total)
    key = {n.USER_ID: event.user_id, n.EVENT_TIMESTAMP: ts, n.CREATED_TIMESTAMP: created}
    behavior = {**key, **state.behavior.counts(now), n.EVENTS_TOTAL: state.behavior.total}
    top = state.affinity.top(params.top_categories_n)
    interest = {
        **key,
        n.TOP_CATEGORIES: [c for c, _ in top],
        n.TOP_CATEGORY_SCORES: [round(s, 6) for _, s in top],
        n.RECENT_ITEMS: list(state.recent),
        n.LAST_EVENT_TS: now // US,
    }
    return state, [(n.USER_BEHAVIOR, behavior), (n.USER_INTEREST, interest)]


def item_features(state: ItemState | None, event: Event) -> tuple[ItemState, list[FeatureRow]]:
    """Update an item's popularity counts with one event; emit its ``item_stats`` row."""
    if state is None:
        state = ItemState(WindowCounts(dict(n.ITEM_WINDOWS)))
    state.counts.add(event.event_type, event.ts_us)
    now = state.counts.latest_us
    counts = state.counts.counts(now)
    views = counts[n.count_feature(n.EventType.VIEW, "7d")]
    buys = counts[n.count_feature(n.EventType.PURCHASE, "7d")]
    shown = counts[n.count_feature(n.EventType.IMPRESSION, "7d")]
    clicks = counts[n.count_feature(n.EventType.CLICK, "7d")]
    ts, created = _stamps(now, state.counts.total)
    row = {
        n.ITEM_ID: event.item_id,
        n.EVENT_TIMESTAMP: ts,
        n.CREATED_TIMESTAMP: created,
        **counts,
        n.EVENTS_TOTAL: state.counts.total,
        n.CONVERSION_7D: buys / views if views else 0.0,
        n.CTR_7D: clicks / shown if shown else 0.0,
    }
    return state, [(n.ITEM_STATS, row)]
