import numpy as np
import pytest

from models.explore import (
    ExploreConfig,
    blend,
    explore_share,
    explore_slots,
    replay,
    thompson_sample,
)

CFG = ExploreConfig(max_share=0.3, min_share=0.05, half_history=20)


def test_explore_share_falls_with_history_within_bounds():
    shares = [explore_share(h, CFG) for h in (0, 5, 20, 100, 10_000)]
    assert shares == sorted(shares, reverse=True)
    assert shares[0] == pytest.approx(0.3)
    assert shares[2] == pytest.approx(0.175)  # the mid-point at half_history
    assert 0.05 < shares[-1] < 0.051


def test_explore_slots_are_bounded_by_max_share():
    assert explore_slots(20, 0.3, CFG) == 6
    assert explore_slots(20, 1.0, CFG) == 6  # a caller asking for more still gets the bound
    assert explore_slots(20, 0.0, CFG) == 0
    assert explore_slots(3, 0.3, CFG) == 0


def test_thompson_prefers_items_that_get_clicked():
    rng = np.random.default_rng(0)
    draws = np.array(
        [thompson_sample(np.array([1000, 1000]), np.array([900, 10]), rng) for _ in range(200)]
    )
    assert (draws[:, 0] > draws[:, 1]).all()


def test_blend_keeps_the_head_and_spreads_explored_items():
    ranked = np.arange(10)
    imp = np.full(10, 100.0)
    clk = np.zeros(10)
    clk[9] = 90  # the last-ranked item is the one shoppers click
    order, explored = blend(ranked, imp, clk, k=5, n_explore=1, rng=np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(10))  # a permutation: nothing lost
    head = order[:5].tolist()
    assert 9 in head and explored[head.index(9)]
    assert [i for i in head if i != 9] == [0, 1, 2, 3]  # the exploit part keeps score order
    assert explored.sum() == 1
    order, explored = blend(ranked, imp, clk, k=5, n_explore=0, rng=np.random.default_rng(0))
    assert order.tolist() == list(range(10)) and not explored.any()


def test_blend_with_fewer_candidates_than_slots():
    order, explored = blend(np.arange(3), np.zeros(3), np.zeros(3), 10, 3, np.random.default_rng(1))
    assert sorted(order.tolist()) == [0, 1, 2] and explored.sum() <= 3


def test_replay_thompson_learns_what_greedy_never_shows():
    """Every user's wanted item sits just below the top k by score: greedy never shows it,
    Thompson sampling finds it through clicks and keeps showing it."""
    rng = np.random.default_rng(0)
    rounds = []
    for _ in range(300):
        cands = np.concatenate([np.arange(5), rng.permutation(np.arange(5, 40))])
        rounds.append((cands, {7}, 0))
    out = replay(rounds, n_items=40, k=5, cfg=CFG, seed=0)
    assert out["greedy"]["reward"] == 0
    assert out["thompson"]["reward"] > out["epsilon_greedy"]["reward"] > 0
    assert out["greedy"]["coverage"] == pytest.approx(5 / 40)
    assert out["thompson"]["coverage"] > out["greedy"]["coverage"]
