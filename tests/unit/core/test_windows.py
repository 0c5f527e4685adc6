import random

import pytest

from core import names as n
from core.windows import (
    US,
    add_read_time_columns,
    age_edges,
    bucket_events,
    decode_buckets,
    encode_buckets,
    read_time_features,
    window_counts,
)

H = 3600
WINDOWS = n.USER_WINDOWS


def true_counts(times_by_type, at_us, windows=WINDOWS):
    return {
        n.count_feature(t, w): sum(1 for x in times if at_us - secs * US < x <= at_us)
        for t, times in times_by_type.items()
        for w, secs in windows.items()
    }


def test_age_edges_cut_each_window_at_its_resolution():
    edges = age_edges(tuple(WINDOWS.items()))
    assert edges[:3] == (0, 300 * US, 600 * US)
    assert 3600 * US in edges and 86_400 * US in edges and edges[-1] == 604_800 * US
    assert len(edges) == 1 + 12 + 23 + 24


def test_counts_read_at_the_row_time_are_exact():
    rng = random.Random(1)
    now = 30 * 86_400 * US
    times = {
        "view": sorted(now - rng.randrange(0, 9 * 86_400 * US) for _ in range(300)),
        "purchase": sorted(now - rng.randrange(0, 2 * H * US) for _ in range(20)),
    }
    counts = window_counts(bucket_events(times, now, WINDOWS), now, WINDOWS)
    assert {k: v for k, v in counts.items() if v or k in true_counts(times, now)} == true_counts(
        times, now
    )


def test_counts_read_later_decay_to_within_one_resolution_step():
    """A clock moves on without events: an event leaves each count at most one resolution
    step late, i.e. true count over W <= read count <= true count over W + one step."""
    rng = random.Random(2)
    written = 10 * 86_400 * US
    times = {"view": sorted(written - rng.randrange(0, 8 * 86_400 * US) for _ in range(400))}
    buckets = bucket_events(times, written, WINDOWS)
    for later_s in (0, 60, 299, 301, 3599, 3601, 5 * H, 23 * H, 25 * H, 3 * 86_400, 8 * 86_400):
        at = written + later_s * US
        got = window_counts(buckets, at, WINDOWS)
        for w, secs in WINDOWS.items():
            feature = n.count_feature("view", w)
            step = n.WINDOW_RESOLUTION_S[w] * US
            exact = sum(1 for x in times["view"] if at - secs * US < x <= at)
            widened = sum(1 for x in times["view"] if at - secs * US - step < x <= at)
            assert exact <= got[feature] <= widened, (later_s, w)
            if later_s == 0:
                assert got[feature] == exact


def test_a_week_old_shopper_reads_zero_in_the_last_hour():
    t = 1_000 * H * US
    buckets = bucket_events({"view": [t - 60 * US, t]}, t, WINDOWS)
    assert read_time_features(n.USER_BEHAVIOR, buckets, t)["views_1h"] == 2
    week_later = read_time_features(n.USER_BEHAVIOR, buckets, t + 7 * 86_400 * US)
    assert week_later["views_1h"] == week_later["views_24h"] == week_later["views_7d"] == 0


def test_item_conversion_and_ctr_are_computed_at_read_time():
    t = 100 * 86_400 * US
    times = {"view": [t - 8 * 86_400 * US, t - 1 * US, t], "purchase": [t], "impression": [t]}
    got = read_time_features(n.ITEM_STATS, bucket_events(times, t, n.ITEM_WINDOWS), t)
    assert got["views_7d"] == 2 and got["views_30d"] == 3
    assert got[n.CONVERSION_7D] == 0.5 and got[n.CTR_7D] == 0.0


def test_add_read_time_columns_per_row_times_and_missing_rows():
    t = 50 * H * US
    buckets = bucket_events({"view": [t]}, t, WINDOWS)
    cols = {n.full_name(n.USER_BEHAVIOR, n.COUNT_BUCKETS): [buckets, buckets, float("nan")]}
    add_read_time_columns(cols, [t, t + 2 * H * US, t])
    assert cols[n.full_name(n.USER_BEHAVIOR, "views_1h")] == [1, 0, None]  # None: unknown
    assert cols[n.full_name(n.USER_BEHAVIOR, "views_24h")] == [1, 1, None]


def test_unknown_view_has_no_read_time_features():
    with pytest.raises(ValueError, match="no read-time features"):
        read_time_features(n.USER_INTEREST, [], 0)


def _walk_buckets(times: list[int], now: int, edges: tuple[int, ...]) -> list[int]:
    """The buckets by definition: every event's age bucket, one at a time (type index 0)."""
    out: list[int] = []
    for t in reversed(times):
        age = now - t
        if age < 0 or age >= edges[-1]:
            continue
        j = max(k for k in range(len(edges) - 1) if edges[k] <= age)
        if out and out[-1][0] == j:
            out[-1][2] += 1
        else:
            out.append([j, t, 1])
    return [v for j, youngest, count in out for v in (0, youngest, count)]


@pytest.mark.parametrize("events", [1, 3, 40, 500])
def test_buckets_match_their_definition(events):
    """Quiet and busy entities, events at bucket edges and after ``now``: each event in the
    bucket of its age, youngest bucket first, older than the largest window left out."""
    rng = random.Random(events)
    now = 40 * 86_400 * US
    edges = age_edges(tuple(WINDOWS.items()))
    times = sorted(
        [now - rng.randrange(0, 9 * 86_400 * US) for _ in range(events)]
        + [now - e for e in edges[:5]]  # exactly on an edge: the older bucket
        + [now - edges[-1], now + US]  # too old for any window; not known yet
    )
    got = bucket_events({"view": times}, now, WINDOWS)
    assert got == _walk_buckets(times, now, edges)
    assert sum(got[2::3]) == true_counts({"view": times}, now)["views_7d"]


def test_stored_text_form_round_trips_and_reads_alike():
    t = 9 * H * US
    buckets = bucket_events({"view": [t - 7 * H * US, t], "cart": [t - 60 * US]}, t, WINDOWS)
    text = encode_buckets(buckets)
    assert decode_buckets(text) == buckets and decode_buckets("") == []
    later = t + 2 * H * US
    assert window_counts(text, later, WINDOWS) == window_counts(buckets, later, WINDOWS)
    assert read_time_features(n.USER_BEHAVIOR, "", t)["views_7d"] == 0  # known, no events
