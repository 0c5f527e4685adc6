"""The feature dataflow: ``build_flow(source, sink)`` with injectable I/O.

events -> parse_event -> (dead letters | events) -> user_features / item_features -> rows
The same flow backfills from an event log and (with a live source) updates features live.
Rows leave the flow as ``(source id, (source id, (view, row)))``: the key routes every row of
one event to the same sink partition, which can then acknowledge the event once all its rows
are written.
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

from core.settings import get_settings
from stream.steps import (
    US,
    DeadLetter,
    Event,
    FeatureParams,
    FeatureRow,
    item_features,
    parse_event,
    user_features,
    watermark,
)


def default_params() -> FeatureParams:
    s = get_settings()
    return FeatureParams(
        s.recent_items_n, s.top_categories_n, s.affinity_half_life_hours, s.allowed_lateness_s
    )


KeyedRow = tuple[str, tuple[str, FeatureRow]]  # (routing key, (source id or key, row))


def _tag_rows(step: Callable[[Any, Event], tuple[Any, list[FeatureRow]]]):
    """Wrap a feature step so its rows carry the event's source id (or user id in backfill)."""

    def mapper(state: Any, event: Event) -> tuple[Any, tuple[str, list[FeatureRow]]]:
        state, rows = step(state, event)
        return state, (event.source_id or event.user_id, rows)

    return mapper


def _one_key(_event: Event) -> str:
    """The watermark is global: one key keeps the events in their arrival order."""
    return "watermark"


def _flatten_rows(keyed: tuple[str, tuple[str, list[FeatureRow]]]) -> list[KeyedRow]:
    """Rows keyed by their event's source id: a live sink sees all rows of one event."""
    source, rows = keyed[1]
    return [(source, (source, row)) for row in rows]


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
    checked = op.key_rm(
        "drop_watermark_key",
        op.stateful_map(
            "watermark",
            op.key_on("key_for_watermark", split.trues, _one_key),
            partial(watermark, allowed_lateness_us=int(params.allowed_lateness_s * US)),
        ),
    )
    on_time = op.branch("split_late_events", checked, lambda x: isinstance(x, Event))
    events = on_time.trues
    dead = op.merge("merge_dead_letters", split.falses, on_time.falses)
    by_user = op.key_on("key_by_user", events, lambda e: e.user_id)
    user_rows = op.stateful_map(
        "user_features", by_user, _tag_rows(partial(user_features, params=params))
    )
    by_item = op.key_on("key_by_item", events, lambda e: e.item_id)
    item_rows = op.stateful_map("item_features", by_item, _tag_rows(item_features))
    rows = op.flat_map("flatten_rows", op.merge("merge_rows", user_rows, item_rows), _flatten_rows)
    op.output("feature_rows", rows, sink)
    op.output("dead_letters", dead, dead_letter_sink)
    return flow
