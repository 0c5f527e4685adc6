from bytewax.testing import TestingSink, TestingSource, run_main

from core import names as n
from stream.flow import build_flow
from stream.io import supersede
from stream.steps import DeadLetter, FeatureParams

PARAMS = FeatureParams(recent_items_n=3, top_categories_n=2, affinity_half_life_hours=1.0)


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
    rows, dead = [], []
    run_main(build_flow(TestingSource(events), TestingSink(rows), TestingSink(dead), PARAMS))
    assert [d.reason for d in dead] == ["missing item_id"]
    assert isinstance(dead[0], DeadLetter) and dead[0].raw == {"user_id": "u1"}
    by_view = {}
    for key, (source, (view, row)) in rows:
        assert key == source == row.get(n.USER_ID, key)  # backfill: keyed by the user id
        by_view.setdefault(view, []).append(row)
    assert [r[n.RECENT_ITEMS] for r in by_view[n.USER_INTEREST] if r[n.USER_ID] == "u1"] == [
        ["i1"],
        ["i2", "i1"],
    ]
    item_rows = [r for r in by_view[n.ITEM_STATS] if r[n.ITEM_ID] == "i1"]
    assert [(r["views_24h"], r["purchases_24h"]) for r in item_rows] == [(1, 0), (1, 1)]
    u2 = [r for r in by_view[n.USER_BEHAVIOR] if r[n.USER_ID] == "u2"]
    assert u2 == [
        {
            n.USER_ID: "u2",
            n.EVENT_TIMESTAMP: 30_000_000,
            n.CREATED_TIMESTAMP: 30_000_001 - 86_400_000_000,
            **dict.fromkeys(n.USER_BEHAVIOR_FEATURES, 0),
            "purchases_1h": 1,
            "purchases_24h": 1,
            "purchases_7d": 1,
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


def test_flow_sends_events_beyond_allowed_lateness_to_dead_letters():
    params = FeatureParams(allowed_lateness_s=60)
    events = [
        raw("u1", "i1", "view", 1000),
        raw("u1", "i2", "view", 990),
        raw("u1", "i3", "view", 10),
    ]
    rows, dead = [], []
    run_main(build_flow(TestingSource(events), TestingSink(rows), TestingSink(dead), params))
    assert [d.raw[n.ITEM_ID] for d in dead] == ["i3"]
    assert dead[0].reason.startswith("late event: 990 s behind")
    totals = [r[n.EVENTS_TOTAL] for _, (_, (view, r)) in rows if view == n.USER_BEHAVIOR]
    assert totals == [1, 2]  # the 10 s-late event is counted, the 990 s-late one is not
