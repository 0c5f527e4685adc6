"""The feature dataflow: ``build_flow(source, sink)`` with injectable I/O.

The shape of the stream after each step (``Event``, ``DeadLetter``: stream.steps)::

    events              raw mappings (a log row or a Redis Stream entry)
    parse_event         Event | DeadLetter                        -> split_dead_letters
    key_by_user         (user_id, Event)        key_by_item         (item_id, Event)
    user_features       (user_id, ("user", Event, [user rows] | DeadLetter))   2 rows: behavior,
                        interest
    item_features       (item_id, ("item", Event, [item rows] | DeadLetter))   1 row: item_stats
    side_rows           ("<side>:<entity id>", (source, side, [rows]))   one element per side
                        of an event (no rows for a late side; no element for a replayed event)
    side_dead_letters   DeadLetter                   a side that found the event late
    feature_rows        sink input: keyed by the side's entity, so one sink partition writes
                        every row of a user (or an item), in order; the live sink
                        acknowledges an event once both its sides are written, wherever
                        they were (stream.live.SideMarks)

``source`` is the event's id on the bus (stream.live; the user id in backfill). Each side sees
the events of its key in arrival order (a user's events come from one bus partition, in
order), so backfill and live compute the same rows for users, and for items when the bus has
one partition. Lateness is judged per user and per item; there is no global watermark, so
events spread over workers and one skewed clock stalls nobody else.
The same flow backfills from an event log and (with a live source) updates features live.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from core.settings import Settings, get_settings
from stream.steps import (
    US,
    DeadLetter,
    Event,
    FeatureParams,
    FeatureRow,
    is_replayed,
    item_features,
    parse_event,
    user_features,
)


def default_params(settings: Settings | None = None) -> FeatureParams:
    """The feature knobs of ``settings`` (default: the process settings)."""
    s = settings or get_settings()
    return FeatureParams(
        s.recent_items_n,
        s.top_categories_n,
        s.affinity_half_life_hours,
        s.allowed_lateness_s,
        s.position_bias_eta,
        s.feedback_half_life_hours,
    )


USER_SIDE, ITEM_SIDE = "user", "item"
# (routing key "<side>:<entity id>", (source id, side, side rows))
KeyedRow = tuple[str, tuple[str, str, list[FeatureRow]]]
SideResult = tuple[str, Event, list[FeatureRow] | DeadLetter]  # (side, event, its result)


def _side(side: str, step: Callable[[Any, Event], tuple[Any, list[FeatureRow] | DeadLetter]]):
    """Wrap a feature step so its result travels with its side and event."""

    def mapper(state: Any, event: Event) -> tuple[Any, SideResult]:
        state, out = step(state, event)
        return state, (side, event, out)

    return mapper


def side_rows(keyed: tuple[str, SideResult]) -> list[KeyedRow]:
    """One sink element per side of an event: its rows (none if the side found it late),
    routed by the side's entity, so one sink partition writes all rows of a user (or item),
    in order (two writing one entity at once could let the older row win online). A
    replayed event has no element: it was written and acknowledged when first seen."""
    entity, (side, event, out) = keyed
    if event.replay:
        return []
    source = event.source_id or event.user_id
    return [(f"{side}:{entity}", (source, side, out if isinstance(out, list) else []))]


def side_dead_letters(keyed: tuple[str, SideResult]) -> list[DeadLetter]:
    out = keyed[1][2]
    return [out] if isinstance(out, DeadLetter) else []


def build_flow(
    source: Source[Any] | None = None,
    sink: Sink[KeyedRow] | None = None,
    dead_letter_sink: Sink[DeadLetter] | None = None,
    params: FeatureParams | None = None,
    flow_id: str = "interest_features",
    future_tolerance_s: int | None = None,
) -> Dataflow:
    """Build the dataflow; defaults replay the configured canonical log into the offline store."""
    if source is None or sink is None or dead_letter_sink is None:
        from stream.io import DeadLetterParquetSink, EventLogSource, OfflineParquetSink

        s = get_settings()
        source = source or EventLogSource(
            s.canonical_dir / s.dataset / "events.parquet", batch_rows=s.backfill_batch_rows
        )
        sink = sink or OfflineParquetSink(s.offline_dir)
        dead_letter_sink = dead_letter_sink or DeadLetterParquetSink(s.data_dir / "dead_letters")
    params = params or default_params()

    flow = Dataflow(flow_id)
    raw = op.input("events", flow, source)
    parse = parse_event
    if future_tolerance_s is not None:  # live: "the future" moves with the wall clock

        def parse(item: Any) -> Event | DeadLetter:
            limit = int((time.time() + future_tolerance_s) * US)
            return parse_event(item, max_ts_us=limit)

    parsed = op.map("parse_event", raw, parse)
    split = op.branch("split_dead_letters", parsed, lambda x: isinstance(x, Event))
    by_user = op.key_on("key_by_user", split.trues, lambda e: e.user_id)
    user_step = _side(USER_SIDE, partial(user_features, params=params))
    users = op.stateful_map("user_features", by_user, user_step)
    by_item = op.key_on("key_by_item", split.trues, lambda e: e.item_id)
    item_step = _side(ITEM_SIDE, partial(item_features, params=params))
    items = op.stateful_map("item_features", by_item, item_step)
    sides = op.merge("merge_sides", users, items)
    rows = op.flat_map("side_rows", sides, side_rows)
    late = op.flat_map("side_dead_letters", sides, side_dead_letters)
    dead = op.filter(
        "drop_replayed_dead_letters",
        op.merge("merge_dead_letters", split.falses, late),
        lambda d: not is_replayed(d),
    )
    op.output("feature_rows", rows, sink)
    op.output("dead_letters", dead, dead_letter_sink)
    return flow
