from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from core import names as n
from models.simulation import (
    Shop,
    ShopConfig,
    Shopper,
    Trace,
    click_uniforms,
    held_out_shoppers,
    pick_new_item,
    schedule,
    slot_examination,
)

CFG = ShopConfig(
    bought_appeal=0.5,
    category_appeal=0.05,
    base_appeal=0.005,
    new_item_appeal=0.3,
    new_item_for_all=False,
)
CATALOGUE = ["a1", "a2", "a3", "b1", "b2", "c1", "new"]
CATEGORIES = ["a", "a", "a", "b", "b", "c", "a"]
ALICE = Shopper("alice", frozenset({"a1"}), frozenset({"a"}))
BOB = Shopper("bob", frozenset({"b1"}), frozenset({"b"}))


def shop(cfg: ShopConfig = CFG, **kw) -> Shop:
    return Shop([ALICE, BOB], CATALOGUE, CATEGORIES, cfg, **kw)


def test_appeal_follows_held_out_purchases_categories_and_the_new_item():
    s = shop(new_item="new")
    assert s.appeal("alice", ["a1", "a2", "b1", "new"]).tolist() == [0.5, 0.05, 0.005, 0.3]
    assert s.appeal("bob", ["a1", "b2", "new"]).tolist() == [0.005, 0.05, 0.005]  # not his
    for_all = replace(CFG, new_item_for_all=True)
    assert shop(for_all, new_item="new").appeal("bob", ["new"]).tolist() == [0.3]


def test_click_probability_is_examination_times_appeal():
    s = shop()
    probs = s.click_probs("alice", ["a2", "a1", "c1"])
    assert probs.tolist() == pytest.approx([0.05, 0.5 / 2, 0.005 / 3])
    assert slot_examination(3, 2.0).tolist() == pytest.approx([1.0, 0.25, 1 / 9])


def test_clicks_follow_the_model_over_many_draws():
    rng = np.random.default_rng(0)
    draws = 5_000
    clicked = np.zeros(3)
    for _ in range(draws):
        s = shop()  # fresh: nothing spent yet
        clicked += s.clicks("alice", ["a1", "a2", "b1"], rng.random(3))
    expected = np.array([0.5, 0.05 / 2, 0.005 / 3])
    sd = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(clicked / draws - expected) < 4 * sd), clicked / draws


def test_clicks_are_reproducible_and_spend_the_item():
    u = click_uniforms(seed=3, round_no=1, shopper_no=0, k=3)
    assert np.array_equal(u, click_uniforms(seed=3, round_no=1, shopper_no=0, k=3))
    assert not np.array_equal(u, click_uniforms(seed=3, round_no=2, shopper_no=0, k=3))
    s = shop()
    clicked = s.clicks("alice", ["a1", "a2"], np.array([0.0, 0.99]))  # a1 clicked for sure
    assert clicked.tolist() == [True, False]
    assert s.appeal("alice", ["a1"]).tolist() == [CFG.base_appeal]  # spent


def test_oracle_slate_has_zero_regret_and_others_positive():
    s = shop(new_item="new", excluded={"alice": {"a3"}})
    k = 3
    best = s.best_expected("alice", k)
    oracle = ["a1", "new", "a2"]  # 0.5, 0.3, then a category item (a3 excluded)
    assert s.expected_clicks("alice", oracle) == pytest.approx(best)
    assert best == pytest.approx(0.5 + 0.3 / 2 + 0.05 / 3)
    worse = ["a2", "new", "a1"]  # the same items in a worse order
    assert best - s.expected_clicks("alice", worse) > 0
    assert best - s.expected_clicks("alice", ["b1", "c1", "b2"]) > 0.6


def test_excluded_items_never_count_for_the_oracle():
    s = shop(excluded={"alice": {"a1"}})
    assert s.best_expected("alice", 1) == pytest.approx(0.05)


def test_trace_finds_the_discovery_round_and_accumulates_regret():
    t = Trace("thompson")
    no, yes = np.array([False, False]), np.array([False, True])
    t.record(1, [(["a1", "a2"], no, 0.2, 0.5, 0)], "new")
    t.record(2, [(["a1", "new"], no, 0.3, 0.5, 1)], "new")  # shown, not clicked
    t.record(3, [(["a2", "b1"], yes, 0.4, 0.5, 0), (["a1", "new"], yes, 0.5, 0.5, 1)], "new")
    out = t.summary()
    assert out["new_item_first_shown_round"] == 2
    assert out["rounds_to_discovery"] == 3
    assert out["cumulative_clicks"] == [0, 0, 2]
    assert out["cumulative_regret"] == pytest.approx([0.3, 0.5, 0.6])
    assert out["explored_share"] == pytest.approx(2 / 8)
    never = Trace("greedy")
    never.record(1, [(["a1", "a2"], yes, 0.2, 0.5, 0)], "new")
    assert never.summary()["rounds_to_discovery"] is None


def test_schedule_is_seeded_and_distinct_within_a_round():
    a, b = schedule(50, 4, 10, seed=1), schedule(50, 4, 10, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(len(set(r.tolist())) == 10 for r in a)
    assert [len(r) for r in schedule(3, 2, 10, seed=0)] == [3, 3]


def test_held_out_shoppers_keep_users_with_something_left_to_find():
    test = pd.DataFrame(
        {
            n.USER_ID: ["alice", "alice", "bob", "carol", "dave"],
            n.ITEM_ID: ["a1", "b1", "b1", "a1", "zz"],
        }
    )
    cats = dict(zip(CATALOGUE, CATEGORIES, strict=True))
    found = held_out_shoppers(test, ["alice", "bob", "dave"], cats, excluded={"bob": {"b1"}})
    # carol is not a trained user, bob bought only what he had, dave's item is not sold
    assert found == [Shopper("alice", frozenset({"a1", "b1"}), frozenset({"a", "b"}))]


def test_pick_new_item_prefers_reach_then_audience():
    cats = {"x": "a", "y": "b", "z": "c"}
    shoppers = [ALICE, BOB, Shopper("carol", frozenset(), frozenset({"a"}))]
    assert pick_new_item(["x", "y", "z"], cats, shoppers, CFG) == "x"  # two fans
    assert pick_new_item(["x", "y", "z"], cats, shoppers, CFG, reach={"y": {"bob"}}) == "y"
    everyone = replace(CFG, new_item_for_all=True)
    reach = {"x": {"alice"}, "z": {"alice", "bob"}}
    assert pick_new_item(["x", "y", "z"], cats, shoppers, everyone, reach) == "z"
    assert pick_new_item([], cats, shoppers, CFG) is None
