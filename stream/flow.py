"""The feature dataflow: ``build_flow(source, sink)`` with injectable I/O.

The shape of the stream after each step (``Event``, ``DeadLetter``: stream.steps)::

    events              raw mappings (a log row or a Redis Stream entry)
    parse_event         Event | DeadLetter                        -> split_dead_letters
    key_by_user         (user_id, Event)        key_by_item         (item_id, Event)
    user_features       (user_id, (Event, [user rows] | DeadLetter))    2 rows: behavior, interest
    item_features       (item_id, (Event, [item rows] | DeadLetter))    1 row: item_stats
    side_rows           (source, (source, [rows]))   one element per side of an event (no rows
                        for a late side; no element for a replayed event)
    side_dead_letters   DeadLetter                   a side that found the event late
    feature_rows        sink input: keyed by the event's source id, so one sink partition sees
                        both sides of one event and can acknowledge it once both are written

``source`` is the Redis Stream entry id of a live event (the user id in backfill). Each side
sees the events of its key in arrival order (one source partition, one sender), so backfill
and live compute the same rows. Lateness is judged per user and per item; there is no global
watermark, so events spread over workers and one skewed clock stalls nobody else.
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


KeyedRow = tuple[str, tuple[str, list[FeatureRow]]]  # (routing key, (source id, side rows))
SideResult = tuple[Event, list[FeatureRow] | DeadLetter]


def _side(step: Callable[[Any, Event], tuple[Any, list[FeatureRow] | DeadLetter]]):
    """Wrap a feature step so its result travels with its event."""

    def mapper(state: Any, event: Event) -> tuple[Any, SideResult]:
        state, out = step(state, event)
        return state, (event, out)

    return mapper


def side_rows(result: SideResult) -> list[KeyedRow]:
    """One sink element per side of an event: its rows (none if the side found it late).
    A replayed event has no element: it was written and acknowledged when first seen."""
    event, out = result
    if event.replay:
        return []
    source = event.source_id or event.user_id
    return [(source, (source, out if isinstance(out, list) else []))]


def side_dead_letters(result: SideResult) -> list[DeadLetter]:
    return [result[1]] if isinstance(result[1], DeadLetter) else []


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
    users = op.stateful_map("user_features", by_user, _side(partial(user_features, params=params)))
    by_item = op.key_on("key_by_item", split.trues, lambda e: e.item_id)
    items = op.stateful_map("item_features", by_item, _side(partial(item_features, params=params)))
    sides = op.key_rm("drop_entity_keys", op.merge("merge_sides", users, items))
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
