"""The feature dataflow: ``build_flow(source, sink)`` with injectable I/O.

Elements are *batches*, not single events: the engine's cost is paid per batch and per state
bucket, not per event (one element per event through a dozen steps cost more than the
feature work itself). The shape of the stream after each step (``Event``, ``DeadLetter``:
stream.steps)::

    events              a batch: a list of raw mappings (log rows, Redis Stream entries)
    parse_events        Parsed: the batch's Events, its DeadLetters, each event's user and
                        item bucket, and (live) what the sink needs to acknowledge it
    user_pieces         ("user:<bucket>", Piece)   the batch's events of one user bucket, in order
                        (the key may carry a suffix that places it: stream.routing)
    item_pieces         ("item:<bucket>", Piece)   ... of one item bucket (no forget events)
    user_features       ("user:<bucket>", SideRows)   every event's user_behavior and
                        user_interest rows; state: {user id: UserState} of the bucket
    item_features       ("item:<bucket>", SideRows)   item_stats (item_feedback) rows
    feature_rows        sink input, keyed by the piece: one sink partition writes every row
                        of a bucket (so of a user, or an item), in order; the live sink
                        acknowledges a batch once all its pieces are written, wherever they
                        were (stream.live.SideMarks)
    dead_letters        parse failures and events late for one side (none of replayed history)

A user's events come from one bus partition, in order, so each user bucket sees them in
arrival order, and backfill and live compute the same rows for users (for items too when the
bus has one partition). Lateness is judged per user and per item; there is no global
watermark, so events spread over workers and one skewed clock stalls nobody else. Buckets
(``IG_STATE_BUCKETS``) are the unit of parallelism and of Bytewax's state snapshots: a
snapshot holds every entity of a bucket touched in the epoch.
The same flow backfills from an event log and (with a live source) updates features live.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from core import names as n
from core.bus import partition_of
from core.settings import Settings, get_settings
from stream.routing import bucket_keys
from stream.steps import (
    US,
    BatchInfo,
    DeadLetter,
    Event,
    FeatureParams,
    FeatureRow,
    KeyedRows,
    Parsed,
    Piece,
    SideRows,
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


def parse_events(
    raws: list[Any], buckets: int, parse: Callable[[Any], Event | DeadLetter] = parse_event
) -> Parsed:
    """Parse a batch; bucket its events (:func:`core.bus.partition_of` of the user / item id:
    the same bucket in every process); for live events (with a source id) the batch's
    :class:`BatchInfo`. Dead letters of replayed history are dropped: they were recorded when
    first seen."""
    events: list[Event] = []
    dead: list[DeadLetter] = []
    for raw in raws:
        got = parse(raw)
        if isinstance(got, Event):
            events.append(got)
        elif not is_replayed(got):
            dead.append(got)
    users = [partition_of(e.user_id, buckets) for e in events]
    items = [None if e.event_type == n.FORGET else partition_of(e.item_id, buckets) for e in events]
    live = [i for i, e in enumerate(events) if not e.replay and e.source_id is not None]
    info = None
    if live:
        ids = tuple(events[i].source_id for i in live)  # type: ignore[misc]
        pieces = len({users[i] for i in live}) + len({items[i] for i in live} - {None})
        forgets = tuple(events[i].source_id for i in live if events[i].event_type == n.FORGET)
        info = BatchInfo.of(pieces, ids, forgets)  # type: ignore[arg-type]
    return Parsed(events, dead, users, items, info)


def pieces(side: str, keys: tuple[str, ...], parsed: Parsed) -> list[tuple[str, Piece]]:
    """The batch's events of ``side`` split by state bucket, each piece under its bucket's
    key (``keys``: :func:`stream.routing.bucket_keys`)."""
    groups: dict[int, list[Event]] = {}
    chosen = parsed.user_buckets if side == USER_SIDE else parsed.item_buckets
    for event, bucket in zip(parsed.events, chosen, strict=True):
        if bucket is not None:
            groups.setdefault(bucket, []).append(event)
    keyed = ((keys[b], events) for b, events in groups.items())
    return [(key, Piece(key, parsed.info, events)) for key, events in keyed]


Step = Callable[[Any, Event], tuple[Any, list[FeatureRow] | DeadLetter]]


def run_piece(
    states: dict[str, Any], step: Step, entity: Callable[[Event], str], piece: Piece
) -> tuple[list[FeatureRow], list[DeadLetter], bool]:
    """Apply ``step`` to each event of ``piece`` with its entity's state in ``states`` (a
    state that becomes None is dropped: a forgotten shopper). Returns the rows, the dead
    letters of live events late for this side, and whether any event was live (a piece of
    replayed history only writes and acknowledges nothing)."""
    rows: list[FeatureRow] = []
    dead: list[DeadLetter] = []
    live = False
    for event in piece.events:
        key = entity(event)
        state, out = step(states.get(key), event)
        if state is None:
            states.pop(key, None)
        else:
            states[key] = state
        if isinstance(out, DeadLetter):
            if not event.replay:
                dead.append(out)
        else:
            rows.extend(out)
        live = live or not event.replay
    return rows, dead, live


class BucketLogic(StatefulBatchLogic[Piece, SideRows, bytes]):
    """One state bucket of one side: ``{entity id: state}`` for the bucket's users or items.

    Its snapshot is the pickled dict (Bytewax takes one per bucket touched in an epoch; a
    pickle is an immutable copy at C speed, where ``stateful_map`` deep-copies in Python)."""

    def __init__(self, step: Step, entity: Callable[[Event], str], resume: bytes | None) -> None:
        self.step = step
        self.entity = entity
        self.states: dict[str, Any] = pickle.loads(resume) if resume is not None else {}

    def on_batch(self, values: list[Piece]) -> tuple[list[SideRows], bool]:
        out = []
        for piece in values:
            rows, dead, live = run_piece(self.states, self.step, self.entity, piece)
            if live:
                out.append(SideRows(piece.key, piece.info, rows, dead))
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.states, protocol=pickle.HIGHEST_PROTOCOL)


def _side_logic(side: str, params: FeatureParams) -> Callable[[bytes | None], BucketLogic]:
    if side == USER_SIDE:
        step, entity = partial(user_features, params=params), _user_of
    else:
        step, entity = partial(item_features, params=params), _item_of
    return partial(BucketLogic, step, entity)


def _user_of(event: Event) -> str:
    return event.user_id


def _item_of(event: Event) -> str:
    return event.item_id


def _late(keyed: KeyedRows) -> list[DeadLetter]:
    return keyed[1].dead


def build_flow(
    source: Source[Any] | None = None,
    sink: Sink[KeyedRows] | None = None,
    dead_letter_sink: Sink[DeadLetter] | None = None,
    params: FeatureParams | None = None,
    flow_id: str = "interest_features",
    future_tolerance_s: int | None = None,
    buckets: int | None = None,
    workers: int = 1,
    streams: tuple[str, ...] = (),
) -> Dataflow:
    """Build the dataflow; defaults replay the configured canonical log into the offline store.

    The source emits batches (lists of raw events); ``buckets`` (default
    ``IG_STATE_BUCKETS``) state buckets per side. ``workers`` (all processes') and
    ``streams`` (the bus partitions the source reads) place each user bucket on the worker
    that reads its users (:mod:`stream.routing`)."""
    if source is None or sink is None or dead_letter_sink is None:
        from stream.io import DeadLetterParquetSink, EventLogSource, OfflineParquetSink

        s = get_settings()
        source = source or EventLogSource(
            s.canonical_dir / s.dataset / "events.parquet", batch_rows=s.backfill_batch_rows
        )
        sink = sink or OfflineParquetSink(s.offline_dir)
        dead_letter_sink = dead_letter_sink or DeadLetterParquetSink(s.data_dir / "dead_letters")
    params = params or default_params()
    buckets = buckets if buckets is not None else get_settings().state_buckets
    parse = parse_event
    if future_tolerance_s is not None:  # live: "the future" moves with the wall clock

        def parse(item: Any) -> Event | DeadLetter:
            limit = int((time.time() + future_tolerance_s) * US)
            return parse_event(item, max_ts_us=limit)

    flow = Dataflow(flow_id)
    raw = op.input("events", flow, source)
    parsed = op.map("parse_events", raw, partial(parse_events, buckets=buckets, parse=parse))
    users = op.stateful_batch(
        "user_features",
        op.flat_map(
            "user_pieces",
            parsed,
            partial(pieces, USER_SIDE, bucket_keys(USER_SIDE, buckets, workers, streams)),
        ),
        _side_logic(USER_SIDE, params),
    )
    items = op.stateful_batch(
        "item_features",
        op.flat_map(
            "item_pieces", parsed, partial(pieces, ITEM_SIDE, bucket_keys(ITEM_SIDE, buckets))
        ),
        _side_logic(ITEM_SIDE, params),
    )
    rows = op.merge("feature_rows", users, items)
    dead = op.merge(
        "dead_letters_merged",
        op.flat_map("parse_dead_letters", parsed, lambda p: p.dead),
        op.flat_map("late_dead_letters", rows, _late),
    )
    op.output("write_feature_rows", rows, sink)
    op.output("dead_letters", dead, dead_letter_sink)
    return flow
