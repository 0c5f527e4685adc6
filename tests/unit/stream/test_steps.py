from datetime import UTC, datetime

import pytest

from core import names as n
from stream.steps import (
    US,
    DeadLetter,
    DecayedAffinity,
    Event,
    FeatureParams,
    WindowCounts,
    item_features,
    parse_event,
    user_features,
)

H = 3600


def ev(user="u1", item="i1", etype="view", t=0, cat="c1", value=1.0):
    return Event(user, item, etype, t * US, value, None, cat)


def test_parse_event_accepts_iso_datetime_and_unix_seconds():
    raw = {n.USER_ID: " u1 ", n.ITEM_ID: 7, n.EVENT_TYPE: "CART", n.EVENT_TIMESTAMP: 1.5}
    assert parse_event(raw) == Event("u1", "7", "cart", 1_500_000, 1.0, None, None)
    iso = dict(raw, event_timestamp="1970-01-01T00:00:02Z")
    assert parse_event(iso).ts_us == 2 * US
    dt = dict(raw, event_timestamp=datetime(1970, 1, 1, 0, 0, 3, tzinfo=UTC))
    assert parse_event(dt).ts_us == 3 * US


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not a dict", "event is not an object"),
        ({n.ITEM_ID: "i", n.EVENT_TYPE: "view", n.EVENT_TIMESTAMP: 1}, "missing user_id"),
        (
            {n.USER_ID: "u", n.ITEM_ID: "", n.EVENT_TYPE: "view", n.EVENT_TIMESTAMP: 1},
            "missing item_id",
        ),
        (
            {n.USER_ID: "u", n.ITEM_ID: "i", n.EVENT_TYPE: "teleport", n.EVENT_TIMESTAMP: 1},
            "unknown event_type 'teleport'",
        ),
        ({n.USER_ID: "u", n.ITEM_ID: "i", n.EVENT_TYPE: "view"}, "missing event_timestamp"),
        (
            {n.USER_ID: "u", n.ITEM_ID: "i", n.EVENT_TYPE: "view", n.EVENT_TIMESTAMP: "soon"},
            "bad event_timestamp",
        ),
        (
            {
                n.USER_ID: "u",
                n.ITEM_ID: "i",
                n.EVENT_TYPE: "view",
                n.EVENT_TIMESTAMP: 1,
                n.VALUE: "lots",
            },
            "value is not a number",
        ),
    ],
)
def test_parse_event_dead_letters_carry_reason(raw, reason):
    out = parse_event(raw)
    assert isinstance(out, DeadLetter)
    assert out.reason.startswith(reason)
    assert out.raw == raw


def test_parse_event_rejects_future_timestamps():
    raw = {n.USER_ID: "u", n.ITEM_ID: "i", n.EVENT_TYPE: "view", n.EVENT_TIMESTAMP: 100}
    assert parse_event(raw, max_ts_us=50 * US).reason == "event_timestamp in the future"


def test_window_counts_are_trailing_and_evict_old_events():
    wc = WindowCounts({"1h": H, "24h": 24 * H})
    for t in (0, 10, 2 * H, 2 * H + 1):
        wc.add("view", t * US)
    counts = wc.counts((2 * H + 1) * US)
    assert (counts["views_1h"], counts["views_24h"], counts["carts_1h"]) == (2, 4, 0)
    wc.add("view", 30 * H * US)
    assert wc.times["view"] == [30 * H * US]  # older than every window: evicted
    assert wc.total == 5


def test_window_counts_insert_late_events_in_order():
    wc = WindowCounts({"1h": H})
    wc.add("cart", 100 * US)
    wc.add("cart", 50 * US)
    assert wc.times["cart"] == [50 * US, 100 * US]


def test_affinity_halves_every_half_life_and_ranks():
    aff = DecayedAffinity(half_life_us=H * US)
    aff.add("shoes", 4.0, 0)
    aff.add("hats", 1.0, H * US)
    assert aff.top(2) == [("shoes", 2.0), ("hats", 1.0)]
    aff.add("hats", 1.0, 0)  # late: decays to now before adding
    assert aff.scores["hats"] == pytest.approx(1.5)


def test_user_features_emit_both_views_with_recent_items_distinct():
    params = FeatureParams(recent_items_n=2, top_categories_n=1)
    state = None
    for item, t in (("a", 0), ("b", 1), ("a", 2), ("c", 3)):
        state, rows = user_features(state, ev(item=item, t=t, etype="purchase"), params)
    (view1, behavior), (view2, interest) = rows
    assert (view1, view2) == (n.USER_BEHAVIOR, n.USER_INTEREST)
    assert interest[n.RECENT_ITEMS] == ["c", "a"]
    assert behavior["purchases_1h"] == 4 and behavior[n.EVENTS_TOTAL] == 4
    assert interest[n.TOP_CATEGORIES] == ["c1"]
    assert behavior[n.EVENT_TIMESTAMP] == 3 * US
    assert (
        behavior[n.EVENT_TIMESTAMP] - 86_400 * US
        < behavior[n.CREATED_TIMESTAMP]
        < behavior[n.EVENT_TIMESTAMP]
    )
    assert set(behavior) == {
        n.USER_ID,
        n.EVENT_TIMESTAMP,
        n.CREATED_TIMESTAMP,
        *n.USER_BEHAVIOR_FEATURES,
    }


def test_item_features_conversion_over_seven_days():
    state = None
    for etype, t in (("view", 0), ("view", 1), ("view", 2), ("view", 3), ("purchase", 4)):
        state, [(view, row)] = item_features(state, ev(etype=etype, t=t))
    assert view == n.ITEM_STATS
    assert row["views_7d"] == 4 and row["purchases_30d"] == 1
    assert row[n.CONVERSION_7D] == 0.25
    assert set(row) == {n.ITEM_ID, n.EVENT_TIMESTAMP, n.CREATED_TIMESTAMP, *n.ITEM_STATS_FEATURES}


def test_parse_event_keeps_stream_id_and_reports_undecodable_entries():
    from stream.steps import INVALID, STREAM_ID

    raw = {
        n.USER_ID: "u",
        n.ITEM_ID: "i",
        n.EVENT_TYPE: "view",
        n.EVENT_TIMESTAMP: 1,
        STREAM_ID: "1-0",
    }
    assert parse_event(raw).source_id == "1-0"
    bad = parse_event({STREAM_ID: "2-0", INVALID: "bad JSON: Expecting value"})
    assert bad.reason == "bad JSON: Expecting value" and bad.raw[STREAM_ID] == "2-0"


def test_watermark_accepts_out_of_order_within_lateness_and_dead_letters_older():
    from stream.steps import STREAM_ID, watermark

    late_ok = ev(t=500)  # 3500 s behind: within the hour
    state, out = watermark(None, ev(t=4000), allowed_lateness_us=3600 * US)
    state, out = watermark(state, late_ok, allowed_lateness_us=3600 * US)
    assert out is late_ok and state == 4000 * US
    too_late = Event("u1", "i1", "view", 300 * US, 1.0, None, None, "9-0")
    state, out = watermark(state, ev(t=7200), allowed_lateness_us=3600 * US)
    state, out = watermark(state, too_late, allowed_lateness_us=3600 * US)
    assert isinstance(out, DeadLetter)
    assert out.reason == "late event: 6900 s behind the latest event time (allowed 3600 s)"
    assert out.raw[STREAM_ID] == "9-0" and out.raw[n.EVENT_TIMESTAMP] == 300.0


def test_impressions_and_clicks_give_item_ctr_but_no_user_interest():
    state = None
    for etype, t in (
        ("impression", 0),
        ("impression", 1),
        ("impression", 2),
        ("impression", 3),
        ("click", 4),
    ):
        state, [(_, row)] = item_features(state, ev(etype=etype, t=t))
    assert (row["impressions_7d"], row["clicks_7d"], row[n.CTR_7D]) == (4, 1, 0.25)
    ustate, rows = user_features(None, ev(etype="impression", item="shown"), FeatureParams())
    interest = rows[1][1]
    assert interest[n.RECENT_ITEMS] == [] and interest[n.TOP_CATEGORIES] == []
    assert rows[0][1]["impressions_1h"] == 1
