from bytewax.testing import TestingSink, TestingSource, run_main

from core import names as n
from core.bus import STREAM_ID
from core.bus import partition_of as bucket_of
from core.windows import read_time_features
from stream.flow import build_flow, parse_events
from stream.io import supersede
from stream.steps import DeadLetter, FeatureParams, SideRows

PARAMS = FeatureParams(recent_items_n=3, top_categories_n=2, affinity_half_life_hours=1.0)
BUCKETS = 4


def run(events, params=PARAMS, batch=2):
    """The flow over ``events`` in source batches of ``batch``: (sink elements, dead letters)."""
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    rows, dead = [], []
    flow = build_flow(
        TestingSource(batches), TestingSink(rows), TestingSink(dead), params, buckets=BUCKETS
    )
    run_main(flow)
    return rows, dead


def flat(rows):
    """(piece key, view, row) of every feature row the sink got."""
    return [(key, view, row) for key, side in rows for view, row in side.rows]


def raw(user, item, etype, t, cat="c"):
    return {
        n.USER_ID: user,
        n.ITEM_ID: item,
        n.EVENT_TYPE: etype,
        n.EVENT_TIMESTAMP: t,
        n.CATEGORY_ID: cat,
    }


def test_flow_emits_rows_per_view_and_routes_dead_letters():
    events = [
        raw("u1", "i1", "view", 10),
        {"user_id": "u1"},
        raw("u1", "i2", "cart", 20),
        raw("u2", "i1", "purchase", 30),
    ]
    rows, dead = run(events)
    assert [d.reason for d in dead] == ["missing item_id"]
    assert isinstance(dead[0], DeadLetter) and dead[0].raw == {"user_id": "u1"}
    assert not dead[0].side_of_event  # no event at all: the dead-letter sink acknowledges it
    by_view = {}
    assert all(isinstance(side, SideRows) and side.info is None for _, side in rows)  # backfill
    for key, view, row in flat(rows):
        side = key.split(":")[0]
        entity = row[n.USER_ID] if side == "user" else row[n.ITEM_ID]
        assert key == f"{side}:{bucket_of(entity, BUCKETS)}"  # routed by the side's bucket
        by_view.setdefault(view, []).append(row)
    assert {v: len(r) for v, r in by_view.items()} == {
        n.USER_BEHAVIOR: 3,
        n.USER_INTEREST: 3,
        n.ITEM_STATS: 3,
    }
    assert [r[n.RECENT_ITEMS] for r in by_view[n.USER_INTEREST] if r[n.USER_ID] == "u1"] == [
        ["i1"],
        ["i2", "i1"],
    ]
    item_rows = [r for r in by_view[n.ITEM_STATS] if r[n.ITEM_ID] == "i1"]
    counts = [
        read_time_features(n.ITEM_STATS, r[n.COUNT_BUCKETS], r[n.EVENT_TIMESTAMP])
        for r in item_rows
    ]
    assert [(c["views_24h"], c["purchases_24h"]) for c in counts] == [(1, 0), (1, 1)]
    u2 = [r for r in by_view[n.USER_BEHAVIOR] if r[n.USER_ID] == "u2"]
    purchase = n.EVENT_TYPES.index("purchase")
    assert u2 == [
        {
            n.USER_ID: "u2",
            n.EVENT_TIMESTAMP: 30_000_000,
            n.CREATED_TIMESTAMP: 30_000_001 - 86_400_000_000,
            n.COUNT_BUCKETS: f"{purchase},30000000,1",
            n.EVENTS_TOTAL: 1,
        }
    ]


def test_supersede_keeps_latest_version_per_entity_and_time():
    rows = [
        {n.USER_ID: "u", n.EVENT_TIMESTAMP: 1, n.CREATED_TIMESTAMP: 2, "x": "old"},
        {n.USER_ID: "u", n.EVENT_TIMESTAMP: 1, n.CREATED_TIMESTAMP: 3, "x": "new"},
        {n.USER_ID: "v", n.EVENT_TIMESTAMP: 1, n.CREATED_TIMESTAMP: 2, "x": "other"},
        {n.USER_ID: "u", n.EVENT_TIMESTAMP: 5, n.CREATED_TIMESTAMP: 6, "x": "later"},
    ]
    assert [r["x"] for r in supersede(rows, n.USER_ID)] == ["new", "other", "later"]
    distinct = rows[1:]  # no two rows of one user at one time: all kept, in order
    assert [r["x"] for r in supersede(distinct, n.USER_ID)] == ["new", "other", "later"]


def test_flow_sends_events_beyond_allowed_lateness_to_dead_letters():
    params = FeatureParams(allowed_lateness_s=60)
    events = [
        raw("u1", "i1", "view", 1000),
        raw("u1", "i2", "view", 990),
        raw("u1", "i3", "view", 10),
    ]
    rows, dead = run(events, params)
    assert [d.raw[n.ITEM_ID] for d in dead] == ["i3"]
    assert dead[0].reason.startswith("late event: 990 s behind the user's")
    assert dead[0].side_of_event  # its item side is still written: its batch acknowledges it
    totals = [r[n.EVENTS_TOTAL] for _, view, r in flat(rows) if view == n.USER_BEHAVIOR]
    assert totals == [1, 2]  # the 10 s-late event is counted, the 990 s-late one is not


def test_a_future_clock_of_one_user_dead_letters_nobody_else():
    """One shopper's event 23 h ahead (accepted: within a 24 h lateness, as the settings
    require of the future tolerance): everyone else's on-time events still count, on the
    same items too; only that shopper's own events more than 24 h behind it are late."""
    day = 24 * 3600
    params = FeatureParams(allowed_lateness_s=day)
    t0 = 10 * day
    events = [raw("skewed", "i1", "view", t0 + 23 * 3600)]
    events += [raw(f"u{k % 50}", f"i{k % 7}", "view", t0 + k) for k in range(200)]
    events.append(raw("skewed", "i9", "view", t0 - 2 * 3600))  # 25 h behind its own clock
    rows, dead = run(events, params)
    assert [(d.raw[n.USER_ID], d.reason.split(" behind ")[1][:10]) for d in dead] == [
        ("skewed", "the user's")
    ]
    users = {r[n.USER_ID] for _, view, r in flat(rows) if view == n.USER_BEHAVIOR}
    assert users == {"skewed", *(f"u{k}" for k in range(50))}
    item_rows = [r for _, view, r in flat(rows) if view == n.ITEM_STATS]
    assert len(item_rows) == 202  # every event counted for its item, i9 included


def test_replayed_history_rebuilds_state_without_sink_elements_or_dead_letters():
    from core.bus import REPLAY

    params = FeatureParams(allowed_lateness_s=60)
    history = [
        {**raw("u1", "i1", "view", 1000), REPLAY: True},
        {**raw("u1", "i2", "view", 10), REPLAY: True},  # late when first seen: no 2nd letter
    ]
    live = [raw("u1", "i3", "cart", 1010)]
    rows, dead = run(history + live, params, batch=3)  # one batch: history and live
    assert dead == []
    assert [v for _, v, _ in flat(rows)] == [n.USER_BEHAVIOR, n.USER_INTEREST, n.ITEM_STATS]
    behavior = next(r for _, v, r in flat(rows) if v == n.USER_BEHAVIOR)
    assert behavior[n.EVENTS_TOTAL] == 2  # continued from the replayed history


def test_a_forget_event_drops_the_shoppers_state_and_their_next_event_starts_anew():
    events = [
        raw("u1", "i1", "view", 10),
        raw("u1", "i2", "view", 20),
        raw("u2", "i1", "view", 25),
        {n.USER_ID: "u1", n.EVENT_TYPE: n.FORGET, n.EVENT_TIMESTAMP: 30},
        raw("u1", "i3", "view", 40),
    ]
    rows, dead = run(events)
    assert dead == []
    assert (n.FORGOTTEN, {n.USER_ID: "u1"}) in [(v, r) for _, v, r in flat(rows)]
    interest = [r for _, v, r in flat(rows) if v == n.USER_INTEREST]
    behavior = [r for _, v, r in flat(rows) if v == n.USER_BEHAVIOR]
    assert [r[n.RECENT_ITEMS] for r in interest if r[n.USER_ID] == "u1"] == [
        ["i1"],
        ["i2", "i1"],
        ["i3"],  # after the forget: a new shopper
    ]
    assert [r[n.EVENTS_TOTAL] for r in behavior if r[n.USER_ID] == "u1"] == [1, 2, 1]
    items = [r for _, v, r in flat(rows) if v == n.ITEM_STATS]
    assert [r[n.EVENTS_TOTAL] for r in items if r[n.ITEM_ID] == "i1"] == [1, 2]  # untouched
    assert not [r for r in items if r[n.ITEM_ID] == n.FORGET]


def test_a_live_batch_names_its_events_and_its_pieces_for_acknowledgement():
    events = [
        {**raw(f"u{k % 5}", f"i{k % 3}", "view", 10 + k), STREAM_ID: f"{k}-0"} for k in range(12)
    ]
    events.append({n.USER_ID: "u0", n.EVENT_TYPE: n.FORGET, STREAM_ID: "12-0"})
    events.append({STREAM_ID: "13-0", n.USER_ID: "u9"})  # no item: a dead letter, no piece
    parsed = parse_events(events, BUCKETS)
    info = parsed.info
    assert info.ids == [f"{k}-0" for k in range(13)]
    assert info.forgets == ("12-0",)
    users = {bucket_of(f"u{k}", BUCKETS) for k in range(5)}
    items = {bucket_of(f"i{k}", BUCKETS) for k in range(3)}
    assert info.pieces == len(users) + len(items)  # the forget event has no item side
    rows, dead = run(events, batch=len(events))
    assert [d.reason for d in dead] == ["missing item_id"]
    assert sorted(side.piece for _, side in rows) == sorted(
        [f"user:{b}" for b in users] + [f"item:{b}" for b in items]
    )
    assert {side.info for _, side in rows} == {info}
