"""Pure step functions of the feature dataflow, unit-tested on plain values.

Each function here is the body of one Bytewax step of the same name in :mod:`stream.flow`.
Timestamps inside the flow are integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import numpy as np

from core import names as n
from core.bus import INVALID, REPLAY, STREAM_ID
from core.feedback import encode_linear
from core.windows import bucket_events, encode_buckets

US = 1_000_000
FeatureRow = tuple[str, dict[str, Any]]  # (view name, row)
# Live events carry their Redis Stream entry id (STREAM_ID); an entry that could not be
# decoded arrives as {STREAM_ID: id, INVALID: reason}; replayed history carries REPLAY.


@dataclass(slots=True)
class Event:
    """One validated behaviour event; treat it as immutable. Not ``frozen``: a frozen
    dataclass sets each field through ``object.__setattr__``, 1.3 µs a construction against
    0.25 µs (measured), and one is built for every event and again wherever a piece of
    events crosses processes."""

    user_id: str
    item_id: str
    event_type: str
    ts_us: int
    value: float = 1.0
    session_id: str | None = None
    category_id: str | None = None
    source_id: str | None = None  # the Redis Stream entry id, for live events
    # History replayed to rebuild state (stream.live): it updates state and emits no rows,
    # because its rows are in the offline store (and online) already.
    replay: bool = False
    # Where an impression was shown (0 = first slot); None: not known (not from the API).
    position: int | None = None
    # The request's context features for the item (core.names.CONTEXT_DIM numbers; the API
    # adds them to impressions and attributed clicks); None: not known.
    context: tuple[float, ...] | None = None

    def __reduce__(self) -> tuple[type[Event], tuple[Any, ...]]:
        # A piece's events cross processes pickled: a plain tuple of the fields pickles 4x
        # faster, and loads 2x faster, than a slotted dataclass's generated __getstate__.
        return Event, (
            self.user_id,
            self.item_id,
            self.event_type,
            self.ts_us,
            self.value,
            self.session_id,
            self.category_id,
            self.source_id,
            self.replay,
            self.position,
            self.context,
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not become an :class:`Event`, and why. ``side_of_event``: only one
    side of a valid event was refused (late for its user or its item); the event's batch,
    whose other side is still written, acknowledges it, not the dead-letter sink."""

    reason: str
    raw: Any
    side_of_event: bool = False


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def _to_us(value: Any) -> int:
    if isinstance(value, str):  # the bus's form (ISO 8601; "Z" is read as UTC)
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - _EPOCH) // _ONE_US
    if isinstance(value, bool):
        raise TypeError("a boolean is not a timestamp")
    if isinstance(value, int | float):
        return int(round(float(value) * US))  # unix seconds
    raise TypeError(f"unsupported timestamp type {type(value).__name__}")


def _opt_str(value: Any) -> str | None:
    if type(value) is str:  # the common case, first: this runs six times an event
        return value.strip() or None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _slot(value: Any) -> int | None | DeadLetter:
    """A position (0 = first slot): None or NaN is "not known"; a whole float (a log column
    with gaps) is taken as its integer; anything else is refused."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return DeadLetter(f"position is not a slot number (0, 1, ...): {value!r}", value)
    return value


def _context(value: Any) -> tuple[float, ...] | None | DeadLetter:
    """Context features: None (or NaN from a log column) is "not known"; else exactly
    ``CONTEXT_DIM`` finite numbers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != n.CONTEXT_DIM or not all(math.isfinite(v) for v in out):
        return DeadLetter(f"context is not {n.CONTEXT_DIM} finite numbers: {value!r}", value)
    return out


def parse_event(raw: Mapping[str, Any], max_ts_us: int | None = None) -> Event | DeadLetter:
    """A canonical event mapping -> :class:`Event`, or a :class:`DeadLetter` saying why not."""
    if type(raw) is not dict and not isinstance(raw, Mapping):  # (an ABC check is slow)
        return DeadLetter("event is not an object", raw)
    if raw.get(INVALID):
        return DeadLetter(str(raw[INVALID]), raw)
    etype = _opt_str(raw.get(n.EVENT_TYPE))
    if etype == n.FORGET:  # a control event: only the shopper matters
        raw = {n.ITEM_ID: n.FORGET, n.EVENT_TIMESTAMP: 0, **raw}
    ids = {}
    for key in (n.USER_ID, n.ITEM_ID):
        ids[key] = _opt_str(raw.get(key))
        if ids[key] is None:
            return DeadLetter(f"missing {key}", raw)
    if etype is None or (etype.lower() not in n.EVENT_TYPES and etype != n.FORGET):
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
    position = _slot(raw.get(n.POSITION))
    if isinstance(position, DeadLetter):
        return DeadLetter(position.reason, raw)
    context = _context(raw.get(n.CONTEXT))
    if isinstance(context, DeadLetter):
        return DeadLetter(context.reason, raw)
    return Event(
        ids[n.USER_ID],
        ids[n.ITEM_ID],
        etype.lower(),
        ts_us,
        value,
        _opt_str(raw.get(n.SESSION_ID)),
        _opt_str(raw.get(n.CATEGORY_ID)),
        _opt_str(raw.get(STREAM_ID)),
        bool(raw.get(REPLAY)),
        position,
        context,
    )


# The shapes of the dataflow's batches (stream.flow).


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What the live sink needs to acknowledge a source batch once all its pieces are
    written: its ``tag`` (first and last source id), how many ``pieces`` (user buckets +
    item buckets) carry its events, the source ids of those events (``ids``), and which of
    them are forget control events (deleted from the bus once carried out).

    Every piece of a batch carries it, and pieces cross processes: the ids are kept as one
    newline-joined string (a copy when pickled, not thousands of strings; measured, splitting
    them again for each of a batch's up to 128 pieces cost 2% of a process) and split once,
    by the sink partition that completes the batch."""

    tag: str
    pieces: int
    ids_text: str
    forgets: tuple[str, ...]

    @classmethod
    def of(cls, pieces: int, ids: tuple[str, ...], forgets: tuple[str, ...]) -> BatchInfo:
        return cls(f"{ids[0]}..{ids[-1]}", pieces, "\n".join(ids), forgets)

    @property
    def ids(self) -> list[str]:
        return self.ids_text.split("\n") if self.ids_text else []

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return BatchInfo, (self.tag, self.pieces, self.ids_text, self.forgets)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed batch: ``user_buckets[i]`` / ``item_buckets[i]`` are ``events[i]``'s (no item
    bucket for a forget control event: it has no item side)."""

    events: list[Event]
    dead: list[DeadLetter]
    user_buckets: list[int]
    item_buckets: list[int | None]
    info: BatchInfo | None


@dataclass(frozen=True, slots=True)
class Piece:
    """The events of one batch that fall in one state bucket of one side, in batch order."""

    key: str  # "user:<bucket>" / "item:<bucket>"
    info: BatchInfo | None
    events: list[Event]

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return Piece, (self.key, self.info, self.events)  # (it crosses processes)


@dataclass(frozen=True, slots=True)
class SideRows:
    """What one piece produced: its feature rows ((view, row), in event order), the dead
    letters of its events that were late for this side, and the batch it belongs to. A piece
    of replayed history only (no rows, nothing to acknowledge) produces none."""

    piece: str  # "user:<bucket>" / "item:<bucket>": the marks' name for it
    info: BatchInfo | None
    rows: list[FeatureRow]
    dead: list[DeadLetter]


KeyedRows = tuple[str, SideRows]


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
        if ts_us > self.latest_us:
            self.latest_us = ts_us
        oldest_kept = self.latest_us - max(self.windows.values()) * US
        if times[0] <= oldest_kept:
            del times[: bisect_right(times, oldest_kept)]

    def buckets(self, now_us: int) -> str:
        """The events any window holds at ``now_us`` as age buckets, stored form
        (:mod:`core.windows`): readers turn them into counts at their own read time."""
        return encode_buckets(bucket_events(self.times, now_us, self.windows))


@dataclass
class DecayedAffinity:
    """Category scores that halve every ``half_life_us`` without new events.

    Decay is lazy: ``raw`` holds each score in the units of a reference time ``ref_us`` (a
    weight ``w`` at time ``t`` adds ``w * 2 ** ((t - ref) / half_life)``), so an event costs
    O(1) instead of rescaling every category (a third of a user's update, measured), and a
    late event needs no special case. The score at ``as_of_us`` (the latest event time) is
    ``raw * 2 ** -((as_of - ref) / half_life)``; the reference moves forward every
    ``REBASE_HALF_LIVES`` half-lives, before the units grow large. Scores below ``FLOOR``
    count as gone (dropped at a rebase, never reported).
    ``ranked`` keeps the ``top_n`` best categories up to date at O(top_n) per event: decay
    scales every score by the same factor, so it never changes their order; only the
    category an event adds to can move (a full sort of up to 64 categories per event was the
    largest cost of a backfill)."""

    half_life_us: int
    raw: dict[str, float] = field(default_factory=dict)
    ref_us: int | None = None
    as_of_us: int = 0
    max_keys: int = 64
    top_n: int = 5
    ranked: list[str] = field(default_factory=list)

    FLOOR: ClassVar[float] = 1e-6
    REBASE_HALF_LIVES: ClassVar[float] = 32.0

    def add(self, category: str, weight: float, ts_us: int) -> None:
        if self.ref_us is None:
            self.ref_us = ts_us
        if ts_us > self.as_of_us:
            self.as_of_us = ts_us
            if ts_us - self.ref_us > self.REBASE_HALF_LIVES * self.half_life_us:
                self._rebase()
        raw = self.raw
        raw[category] = raw.get(category, 0.0) + weight * 2.0 ** (
            (ts_us - self.ref_us) / self.half_life_us
        )
        ranked = self.ranked
        if len(raw) > self.max_keys:  # drop the weakest: O(keys), not a sort
            weakest = min(raw, key=raw.__getitem__)
            del raw[weakest]
            if weakest in ranked:
                ranked.remove(weakest)
        if category not in raw:  # (it was the weakest, just dropped)
            return
        # Its score only grew, so it can only move up: from where it was (or from the end),
        # past every category it now beats (highest first, ties by name); the others keep
        # their order.
        score = raw[category]
        if category in ranked:
            at = ranked.index(category)
            del ranked[at]
        else:
            at = len(ranked)
        while at:
            above = ranked[at - 1]
            if raw[above] > score or (raw[above] == score and above < category):
                break
            at -= 1
        ranked.insert(at, category)
        del ranked[self.top_n :]

    def _scale(self) -> float:
        """raw units -> scores at ``as_of_us``."""
        if self.ref_us is None:
            return 1.0
        return 2.0 ** (-(self.as_of_us - self.ref_us) / self.half_life_us)

    def _rebase(self) -> None:
        """Move the reference to ``as_of_us`` (raw units = today's scores); drop the gone."""
        self.raw = self.scores
        self.ranked = [c for c in self.ranked if c in self.raw]
        self.ref_us = self.as_of_us

    @property
    def scores(self) -> dict[str, float]:
        """Every category's score at ``as_of_us`` (the gone left out)."""
        factor = self._scale()
        return {c: v * factor for c, v in self.raw.items() if v * factor >= self.FLOOR}

    def top_lists(self, k: int, digits: int = 6) -> tuple[list[str], list[float]]:
        """:meth:`top` as a feature row holds it: the names, and the scores rounded to
        ``digits`` (one pass: this runs for every event)."""
        if k > self.top_n:
            best = self.top(k)
            return [c for c, _ in best], [round(v, digits) for _, v in best]
        factor, raw, floor = self._scale(), self.raw, self.FLOOR
        names, scores = [], []
        for c in self.ranked[:k]:
            v = raw[c] * factor
            if v >= floor:
                names.append(c)
                scores.append(round(v, digits))
        return names, scores

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` highest scores at ``as_of_us``, ties by name."""
        if k > self.top_n:
            return sorted(self.scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        factor, raw = self._scale(), self.raw
        scored = ((c, raw[c] * factor) for c in self.ranked[:k])  # scaling keeps the order
        return [(c, v) for c, v in scored if v >= self.FLOOR]


@dataclass
class UserState:
    behavior: WindowCounts
    affinity: DecayedAffinity
    recent: list[str] = field(default_factory=list)  # most recent first, distinct


def examination(position: int | None, eta: float) -> float:
    """How likely a shopper is to look at slot ``position`` (0 = first) at all, relative to
    the first: ``(1 + position) ** -eta``, the position-based click model's power-law form
    (Joachims et al., "Unbiased Learning-to-Rank with Biased Feedback", WSDM 2017). An
    impression without a position counts as fully examined."""
    return 1.0 if position is None else (1.0 + position) ** -eta


@dataclass
class Feedback:
    """An item's impressions weighted by examination, and its clicks, both halving every
    ``half_life_us`` (the item_feedback view). ``clicked / examined`` is the item's
    position-debiased click-through rate (clicks over expected clicks); decay scales both
    sums alike, so it is the same at any read time."""

    half_life_us: int
    examined: float = 0.0
    clicked: float = 0.0
    as_of_us: int = 0
    # The contextual policy's sums over events with a context (core.feedback): examination-
    # weighted x x^T of impressions [D, D] and x of clicks [D]; None until the first one.
    gram: np.ndarray | None = None
    clicks_x: np.ndarray | None = None

    def add(
        self, examined: float, clicked: float, ts_us: int, context: tuple[float, ...] | None
    ) -> None:
        if ts_us > self.as_of_us:
            factor = 0.5 ** ((ts_us - self.as_of_us) / self.half_life_us)
            self.examined *= factor
            self.clicked *= factor
            if self.gram is not None:
                self.gram *= factor
                self.clicks_x *= factor
            self.as_of_us = ts_us
        else:  # a late event counts decayed to the current time
            factor = 0.5 ** ((self.as_of_us - ts_us) / self.half_life_us)
            examined, clicked = examined * factor, clicked * factor
        self.examined += examined
        self.clicked += clicked
        if context is not None:
            x = np.asarray(context)
            if self.gram is None:
                self.gram, self.clicks_x = np.zeros((len(x), len(x))), np.zeros(len(x))
            self.gram += examined * np.outer(x, x)
            self.clicks_x += clicked * x

    def linear_stats(self) -> str:
        return "" if self.gram is None else encode_linear(self.gram, self.clicks_x)


@dataclass
class ItemState:
    counts: WindowCounts
    feedback: Feedback | None = None  # from the first impression or click on


@dataclass(frozen=True)
class FeatureParams:
    """Knobs of the feature steps (from settings; part of the dataflow's definition)."""

    recent_items_n: int = 20
    top_categories_n: int = 5
    affinity_half_life_hours: float = 168.0
    allowed_lateness_s: float = 3600.0
    position_bias_eta: float = 1.0  # examination (1 + position) ** -eta
    feedback_half_life_hours: float = 168.0


CREATED_OFFSET_US = 86_400 * US


def _stamps(ts_us: int, seq: int) -> tuple[int, int]:
    """(event time, created time) of a feature row.

    Feast orders rows of one entity by (event time, created time) and hides rows whose created
    time is after the entity timestamp. A row computed at event time ``t`` is known at ``t``,
    so created = ``t - 1 day + seq µs``: never after ``t`` and, through the per-entity
    sequence, increasing between rows that share an event time.
    """
    return ts_us, ts_us - CREATED_OFFSET_US + seq


def late_event(
    latest_us: int, event: Event, allowed_lateness_us: int, entity: str
) -> DeadLetter | None:
    """A dead letter when ``event`` is older than its ``entity``'s (user's or item's) latest
    event time by more than the allowed lateness (so one very old event cannot rewrite
    features), else ``None``.

    Lateness is judged per entity: one shopper's (or producer's) skewed clock moves only the
    event time of that shopper and of the items they touched, never anyone else's. An event
    inside the lateness is accepted even out of order (window counts insert it in time order,
    affinity decays its weight)."""
    if event.ts_us >= latest_us - allowed_lateness_us:
        return None
    behind = (latest_us - event.ts_us) / US
    return DeadLetter(
        f"late event: {behind:.0f} s behind the {entity}'s latest event time "
        f"(allowed {allowed_lateness_us / US:.0f} s)",
        _as_raw(event),
        side_of_event=True,
    )


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
    if event.replay:
        raw[REPLAY] = True
    return raw


def is_replayed(dead: DeadLetter) -> bool:
    """A dead letter of replayed history: it was recorded when first seen, not again."""
    return isinstance(dead.raw, Mapping) and bool(dead.raw.get(REPLAY))


# Each event has two sides, each with its own state and lateness: the user's
# (user_features: user_behavior + user_interest rows) and the item's (item_features:
# item_stats). A live event is acknowledged once both sides are written
# (stream.flow.USER_SIDE / ITEM_SIDE, stream.live.SideMarks).


def user_features(
    state: UserState | None, event: Event, params: FeatureParams
) -> tuple[UserState | None, list[FeatureRow] | DeadLetter]:
    """Update a user's state with one event; emit their ``user_behavior`` and ``user_interest``
    rows, or a dead letter if the event is late for this user (the state is then unchanged).
    A replayed event (``event.replay``) updates the state and emits no rows. A ``forget``
    control event drops the state (Bytewax forgets a key whose state is None) and emits the
    :data:`core.names.FORGOTTEN` marker: the shopper's next event starts a new shopper."""
    if event.event_type == n.FORGET:
        return None, [(n.FORGOTTEN, {n.USER_ID: event.user_id})]
    if state is not None:
        late = late_event(
            state.behavior.latest_us, event, int(params.allowed_lateness_s * US), "user"
        )
        if late is not None:
            return state, late
    else:
        state = UserState(
            WindowCounts(n.USER_WINDOWS),  # (shared by every user: never changed)
            DecayedAffinity(
                int(params.affinity_half_life_hours * 3600 * US), top_n=params.top_categories_n
            ),
        )
    behavior, etype, ts_us = state.behavior, event.event_type, event.ts_us
    previous_us = behavior.latest_us
    behavior.add(etype, ts_us)
    now = behavior.latest_us
    weight = n.EVENT_WEIGHTS[etype]
    if weight > 0:  # an impression shows no interest
        if event.category_id is not None:
            state.affinity.add(event.category_id, weight, ts_us)
        if ts_us >= previous_us:
            recent, item = state.recent, event.item_id
            if item in recent:
                recent.remove(item)
            recent.insert(0, item)
            del recent[params.recent_items_n :]
    if event.replay:
        return state, []
    ts, created = _stamps(now, behavior.total)
    user = event.user_id
    names, scores = state.affinity.top_lists(params.top_categories_n)
    return state, [
        (
            n.USER_BEHAVIOR,
            {
                n.USER_ID: user,
                n.EVENT_TIMESTAMP: ts,
                n.CREATED_TIMESTAMP: created,
                n.COUNT_BUCKETS: behavior.buckets(now),
                n.EVENTS_TOTAL: behavior.total,
            },
        ),
        (
            n.USER_INTEREST,
            {
                n.USER_ID: user,
                n.EVENT_TIMESTAMP: ts,
                n.CREATED_TIMESTAMP: created,
                n.TOP_CATEGORIES: names,
                n.TOP_CATEGORY_SCORES: scores,
                n.RECENT_ITEMS: state.recent[:],
                n.LAST_EVENT_TS: now // US,
            },
        ),
    ]


def item_features(
    state: ItemState | None, event: Event, params: FeatureParams | None = None
) -> tuple[ItemState | None, list[FeatureRow] | DeadLetter]:
    """Update an item's popularity counts with one event; emit its ``item_stats`` row (and for
    an impression or click its ``item_feedback`` row; none for a replayed event), or a dead
    letter if the event is late for this item. Its windowed counts, conversion and CTR are
    computed at read time from ``count_buckets`` (:func:`core.windows.read_time_features`)."""
    params = params or FeatureParams()
    if event.event_type == n.FORGET:  # no item side: an item's state holds no shopper
        return state, []
    if state is None:
        state = ItemState(WindowCounts(n.ITEM_WINDOWS))  # (shared, never changed)
    elif state.counts.total:
        lateness = int(params.allowed_lateness_s * US)
        late = late_event(state.counts.latest_us, event, lateness, "item")
        if late is not None:
            return state, late
    state.counts.add(event.event_type, event.ts_us)
    feedback = _feedback(state, event, params)
    if event.replay:
        return state, []
    now = state.counts.latest_us
    ts, created = _stamps(now, state.counts.total)
    key = {n.ITEM_ID: event.item_id, n.EVENT_TIMESTAMP: ts, n.CREATED_TIMESTAMP: created}
    row = {
        **key,
        n.COUNT_BUCKETS: state.counts.buckets(now),
        n.EVENTS_TOTAL: state.counts.total,
    }
    if feedback is None:
        return state, [(n.ITEM_STATS, row)]
    learned = {
        **key,
        n.EXAMINED: round(feedback.examined, 9),
        n.CLICKED: round(feedback.clicked, 9),
        n.FEEDBACK_AS_OF: feedback.as_of_us // US,
        n.LINEAR_STATS: feedback.linear_stats(),
    }
    return state, [(n.ITEM_STATS, row), (n.ITEM_FEEDBACK, learned)]


def _feedback(state: ItemState, event: Event, params: FeatureParams) -> Feedback | None:
    """Add an impression (weighted by its examination) or a click to the item's feedback;
    ``None`` for other events (the feedback row is written only when it changes)."""
    if event.event_type == n.EventType.IMPRESSION:
        add = (examination(event.position, params.position_bias_eta), 0.0)
    elif event.event_type == n.EventType.CLICK:
        add = (0.0, 1.0)
    else:
        return None
    if state.feedback is None:
        state.feedback = Feedback(int(params.feedback_half_life_hours * 3600 * US))
    state.feedback.add(*add, event.ts_us, event.context)
    return state.feedback
