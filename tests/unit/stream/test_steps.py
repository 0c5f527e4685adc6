from datetime import UTC, datetime

import numpy as np
import pytest

from core import names as n
from core.bus import STREAM_ID
from core.feedback import decode_linear
from core.windows import read_time_features
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


def read(view, row, at_s=None):
    """A row's windowed features read at ``at_s`` (default: the row's own time)."""
    now = row[n.EVENT_TIMESTAMP] if at_s is None else at_s * US
    return read_time_features(view, row[n.COUNT_BUCKETS], now)


def user_rows(state, event, params):
    state, rows = user_features(state, event, params)
    assert isinstance(rows, list)
    return state, rows


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
    row = {n.COUNT_BUCKETS: wc.buckets((2 * H + 1) * US), n.EVENT_TIMESTAMP: (2 * H + 1) * US}
    counts = read(n.USER_BEHAVIOR, row)
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
        state, rows = user_rows(state, ev(item=item, t=t, etype="purchase"), params)
    (view1, behavior), (view2, interest) = rows
    assert (view1, view2) == (n.USER_BEHAVIOR, n.USER_INTEREST)
    assert interest[n.RECENT_ITEMS] == ["c", "a"]
    assert read(n.USER_BEHAVIOR, behavior)["purchases_1h"] == 4 and behavior[n.EVENTS_TOTAL] == 4
    assert read(n.USER_BEHAVIOR, behavior, at_s=3 + H)["purchases_1h"] == 0  # an hour on
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
    counts = read(n.ITEM_STATS, row)
    assert counts["views_7d"] == 4 and counts["purchases_30d"] == 1
    assert counts[n.CONVERSION_7D] == 0.25
    assert set(row) == {n.ITEM_ID, n.EVENT_TIMESTAMP, n.CREATED_TIMESTAMP, *n.ITEM_STATS_FEATURES}


def test_parse_event_keeps_stream_id_and_reports_undecodable_entries():
    from core.bus import INVALID, STREAM_ID

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


def test_user_and_item_features_judge_lateness_per_entity():

    params = FeatureParams(allowed_lateness_s=3600)
    state, _ = user_features(None, ev(t=4000), params)
    state, rows = user_features(state, ev(t=500), params)  # 3500 s behind: within the hour
    assert len(rows) == 2 and state.behavior.latest_us == 4000 * US
    state, _ = user_features(state, ev(t=7200), params)
    too_late = Event("u1", "i1", "view", 300 * US, 1.0, None, None, "9-0")
    state, out = user_features(state, too_late, params)
    assert isinstance(out, DeadLetter)
    assert out.reason == "late event: 6900 s behind the user's latest event time (allowed 3600 s)"
    assert out.raw[STREAM_ID] == "9-0" and out.raw[n.EVENT_TIMESTAMP] == 300.0
    assert state.behavior.total == 3  # the dead letter changed nothing
    _, rows = user_features(None, ev(user="u2", t=300), params)  # another user: on time
    assert len(rows) == 2
    item, _ = item_features(None, ev(t=7200), params)
    item, out = item_features(item, too_late, params)
    assert out.reason.startswith("late event: 6900 s behind the item's")
    assert item.counts.total == 1


def test_replayed_events_update_state_and_emit_no_rows():
    params = FeatureParams()
    replayed = Event("u1", "i1", "view", 10 * US, replay=True)
    state, rows = user_features(None, replayed, params)
    assert rows == [] and state.behavior.total == 1 and state.recent == ["i1"]
    state, rows = user_rows(state, ev(item="i2", t=20), params)
    assert rows[0][1][n.EVENTS_TOTAL] == 2 and rows[1][1][n.RECENT_ITEMS] == ["i2", "i1"]
    istate, irows = item_features(None, replayed)
    assert irows == [] and istate.counts.total == 1


def test_impressions_and_clicks_give_item_ctr_but_no_user_interest():
    state = None
    for etype, t in (
        ("impression", 0),
        ("impression", 1),
        ("impression", 2),
        ("impression", 3),
        ("click", 4),
    ):
        state, [(_, row), (view, _)] = item_features(state, ev(etype=etype, t=t))
        assert view == n.ITEM_FEEDBACK
    counts = read(n.ITEM_STATS, row)
    assert (counts["impressions_7d"], counts["clicks_7d"], counts[n.CTR_7D]) == (4, 1, 0.25)
    ustate, rows = user_rows(None, ev(etype="impression", item="shown"), FeatureParams())
    interest = rows[1][1]
    assert interest[n.RECENT_ITEMS] == [] and interest[n.TOP_CATEGORIES] == []
    assert read(n.USER_BEHAVIOR, rows[0][1])["impressions_1h"] == 1


def test_affinity_ranking_kept_incrementally_equals_a_full_sort():
    import random

    rng = random.Random(4)
    aff = DecayedAffinity(half_life_us=H * US, max_keys=12, top_n=4)
    t = 0
    for _ in range(2_000):
        t += rng.choice([0, rng.randrange(0, 2 * H)]) * US  # ties: equal adds at one time
        if rng.random() < 0.1:  # late events too
            aff.add(f"c{rng.randrange(30)}", rng.choice([1.0, 3.0, 5.0]), t - H * US)
        aff.add(f"c{rng.randrange(30)}", rng.choice([1.0, 3.0, 5.0]), t)
        full = sorted(aff.scores.items(), key=lambda kv: (-kv[1], kv[0]))
        assert aff.top(4) == full[:4]
        assert aff.top(6) == full[:6]  # more than kept: a full sort
        assert aff.top_lists(4) == ([c for c, _ in full[:4]], [round(v, 6) for _, v in full[:4]])
    weakest = DecayedAffinity(half_life_us=H * US, max_keys=2, top_n=2)
    weakest.add("a", 5.0, 10 * H * US)
    weakest.add("b", 5.0, 10 * H * US)
    weakest.add("c", 1.0, 0)  # late: decayed below the others, then evicted
    assert weakest.top(2) == [("a", 5.0), ("b", 5.0)]


def shown(item="i1", t=0, position=None, etype="impression"):
    return Event("u1", item, etype, t * US, position=position)


def test_item_feedback_counts_impressions_by_how_likely_their_slot_is_looked_at():
    """Two impressions at slot 0 examine 2; at slot 3 (eta 1) 0.25 each: an item shown low
    is not blamed for clicks nobody looked for."""
    params = FeatureParams(position_bias_eta=1.0)
    top = low = None
    for t in range(2):
        top, _ = item_features(top, shown("top", t, position=0), params)
        low, rows = item_features(low, shown("low", t, position=3), params)
    low, rows = item_features(low, shown("low", 2, etype="click"), params)
    top, _ = item_features(top, shown("top", 2, etype="click"), params)
    feedback = dict(rows)[n.ITEM_FEEDBACK]
    assert feedback[n.EXAMINED] == pytest.approx(0.5, rel=1e-4)
    assert feedback[n.CLICKED] == pytest.approx(1.0, rel=1e-4)
    assert feedback[n.FEEDBACK_AS_OF] == 2
    # Same clicks, same impressions: the item shown low has the higher debiased CTR.
    assert low.feedback.clicked / low.feedback.examined == pytest.approx(
        4 * top.feedback.clicked / top.feedback.examined
    )


def test_item_feedback_decays_with_its_half_life_and_only_changes_on_feedback():
    params = FeatureParams(feedback_half_life_hours=1.0)
    state, rows = item_features(None, shown(t=0, position=0), params)
    state, rows = item_features(state, shown(t=3600, etype="click"), params)
    feedback = dict(rows)[n.ITEM_FEEDBACK]
    assert (feedback[n.EXAMINED], feedback[n.CLICKED]) == (pytest.approx(0.5), 1.0)
    state, rows = item_features(state, shown(t=3601, etype="view"), params)
    assert [view for view, _ in rows] == [n.ITEM_STATS]  # a view is no feedback


def test_parse_event_reads_the_slot_of_an_impression_and_refuses_a_bad_one():
    raw = {"user_id": "u", "item_id": "i", "event_type": "impression", "event_timestamp": 5}
    assert parse_event({**raw, "position": 3}).position == 3
    assert parse_event(raw).position is None
    assert parse_event({**raw, "position": float("nan")}).position is None
    assert parse_event({**raw, "position": 2.0}).position == 2  # a log column with gaps
    for bad in (-1, "2", 1.5, True):
        dead = parse_event({**raw, "position": bad})
        assert isinstance(dead, DeadLetter) and "position" in dead.reason


def test_item_feedback_keeps_the_contextual_sums_of_impressions_and_clicks():
    x = (1.0, 0.5, 1.0, 0.0, 1.0, 0.0)
    params = FeatureParams(position_bias_eta=1.0)
    state, _ = item_features(None, Event("u", "i", "impression", 0, position=1, context=x), params)
    state, rows = item_features(state, Event("u", "i", "click", 1, position=1, context=x), params)
    gram, clicks = decode_linear(dict(rows)[n.ITEM_FEEDBACK][n.LINEAR_STATS])
    assert gram == pytest.approx(0.5 * np.outer(x, x), rel=1e-5)  # slot 1 examines 1/2
    assert clicks == pytest.approx(np.array(x), rel=1e-5)
    plain, rows = item_features(None, shown(t=0, position=0), params)
    assert dict(rows)[n.ITEM_FEEDBACK][n.LINEAR_STATS] == ""  # no context: nothing to learn


def test_parse_event_refuses_a_context_of_the_wrong_length_or_not_numbers():
    raw = {"user_id": "u", "item_id": "i", "event_type": "impression", "event_timestamp": 5}
    assert parse_event({**raw, "context": [0, 1, 0, 1, 0, 1]}).context == (0, 1, 0, 1, 0, 1)
    for bad in ([1, 2], ["a"] * 6, [float("inf")] * 6, 3):
        dead = parse_event({**raw, "context": bad})
        assert isinstance(dead, DeadLetter) and "context" in dead.reason


def test_an_event_pickles_to_an_equal_event_with_every_field():
    import dataclasses
    import pickle

    event = Event("u", "i", "click", 5 * US, 2.0, "s", "c", "1-0", True, 3, (0.5, 1.0))
    assert pickle.loads(pickle.dumps(event)) == event
    _, args = event.__reduce__()
    assert args == tuple(getattr(event, f.name) for f in dataclasses.fields(Event))  # all
    assert pickle.loads(pickle.dumps(Event("u", "i", "view", 0))) == Event("u", "i", "view", 0)


def test_affinity_stays_exact_across_rebases_and_forgets_what_decayed_away():
    aff = DecayedAffinity(half_life_us=H * US)
    aff.add("old", 1.0, 0)
    aff.add("kept", 8.0, 0)
    for k in range(1, 11):  # 100 half-lives later: three rebases on the way
        aff.add("new", 1.0, 10 * k * H * US)
    assert aff.ref_us > 0  # rebased: its units stay small
    assert aff.top(3) == [("new", pytest.approx(1.0 + 2**-10 + 2**-20 + 2**-30, rel=1e-12))]
    assert "old" not in aff.raw and "kept" not in aff.raw  # decayed below the floor: gone
    aff.add("late", 4.0, 99 * H * US)  # one half-life late: counts 2 now
    assert [c for c, _ in aff.top(2)] == ["late", "new"]
    assert aff.top(1)[0][1] == pytest.approx(2.0)


def test_a_batch_info_pickles_to_an_equal_one():
    import pickle

    from stream.steps import BatchInfo, Piece

    for info in (
        BatchInfo.of(4, ("1-0", "2-0@1", "3-0@1"), ("2-0@1",)),
        BatchInfo.of(1, ("5-0",), ()),
    ):
        assert pickle.loads(pickle.dumps(info)) == info
    assert info.ids == ["5-0"] and info.tag == "5-0..5-0"
    piece = Piece("user:3", info, [Event("u", "i", "view", 0), Event("v", "j", "cart", 1)])
    assert pickle.loads(pickle.dumps(piece)) == piece
