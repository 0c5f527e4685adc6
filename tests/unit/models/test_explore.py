import numpy as np
import pytest

from models.explore import (
    CONTEXT_DIM,
    CONTEXTUAL,
    EPSILON_GREEDY,
    GREEDY,
    THOMPSON,
    ExploreConfig,
    beta_posterior,
    choose,
    context_vectors,
    epsilon_greedy,
    explore_share,
    explore_slots,
    linear_probs,
    replay,
    slot_probs,
    thompson,
    thompson_probs,
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
    alpha, beta = beta_posterior(np.array([1000.0, 1000.0]), np.array([900.0, 10.0]))
    p = thompson_probs(alpha, beta, CFG, np.random.default_rng(0))
    assert p.sum() == pytest.approx(1.0)
    assert p[0] == pytest.approx(1 - CFG.floor / 2) and p[1] == pytest.approx(CFG.floor / 2)


def test_thompson_keeps_the_head_and_spreads_explored_items():
    examined = np.full(10, 100.0)
    clicked = np.zeros(10)
    clicked[9] = 90  # the last-ranked item is the one shoppers click
    slate = choose(THOMPSON, 10, 5, 0.2, CFG, np.random.default_rng(0), (examined, clicked))
    head = slate.order.tolist()
    assert len(head) == 5 and 9 in head and slate.explored[head.index(9)]
    assert [i for i in head if i != 9] == [0, 1, 2, 3]  # the exploit part keeps score order
    assert slate.explored.sum() == 1
    assert slate.propensity[~slate.explored].tolist() == [1.0] * 4
    assert slate.propensity[head.index(9)] == pytest.approx(1 - CFG.floor + CFG.floor / 6)
    off = choose(THOMPSON, 10, 5, 0.0, CFG, np.random.default_rng(0), (examined, clicked))
    assert off.order.tolist() == [0, 1, 2, 3, 4] and not off.explored.any()


def test_thompson_propensity_is_the_frequency_of_its_choice():
    """Logged propensities are exact: over many draws an explored slot holds each candidate
    about as often as the propensity logged with it says."""
    rng = np.random.default_rng(3)
    examined, clicked = np.full(8, 20.0), np.array([0, 0, 0, 2, 4, 6, 8, 10.0])
    seen: dict[int, list[float]] = {}
    for _ in range(3000):
        slate = thompson(8, 3, 1, lambda r: np.full(len(r), 1.0 / len(r)) + r * 0.02, rng)
        j = int(np.flatnonzero(slate.explored)[0])
        seen.setdefault(int(slate.order[j]), []).append(float(slate.propensity[j]))
    for item, props in seen.items():
        assert len(set(props)) == 1  # one fixed distribution: one probability per item
        assert len(props) / 3000 == pytest.approx(props[0], abs=0.03), item
    assert examined.shape == clicked.shape


def test_epsilon_greedy_propensities_are_exact():
    rng = np.random.default_rng(5)
    first: dict[int, int] = {}
    for _ in range(4000):
        slate = epsilon_greedy(10, 3, 0.3, rng)
        first[int(slate.order[0])] = first.get(int(slate.order[0]), 0) + 1
        assert len(set(slate.order.tolist())) == 3
        if not slate.explored[0]:
            assert slate.order[0] == 0 and slate.propensity[0] == pytest.approx(0.7 + 0.03)
    assert first[0] / 4000 == pytest.approx(0.73, abs=0.02)
    assert first[5] / 4000 == pytest.approx(0.03, abs=0.01)


def test_policies_with_fewer_candidates_than_slots():
    for policy in (GREEDY, EPSILON_GREEDY, THOMPSON):
        slate = choose(policy, 3, 10, 0.3, CFG, np.random.default_rng(1))
        assert sorted(slate.order.tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown policy"):
        choose("oracle", 3, 10, 0.3, CFG, np.random.default_rng(1))


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


def test_contextual_policy_learns_which_context_an_item_is_clicked_in():
    """Item 0 is clicked on mobile, item 1 on desktop (each shown 200 times on both): the
    linear Thompson posterior prefers item 0 for a mobile request, item 1 for a desktop one;
    a per-item Beta posterior cannot tell the two requests apart."""
    mobile = context_vectors(5, np.zeros(1), 20.0, "mobile")[0]
    desktop = context_vectors(5, np.zeros(1), 20.0, "desktop")[0]
    gram = np.zeros((2, CONTEXT_DIM, CONTEXT_DIM))
    clicks = np.zeros((2, CONTEXT_DIM))
    for x in (mobile, desktop):
        gram += 200 * np.outer(x, x)
    clicks[0] = 60 * mobile
    clicks[1] = 60 * desktop
    rng = np.random.default_rng(0)
    on_mobile = linear_probs(np.stack([mobile, mobile]), gram, clicks, CFG, rng)
    on_desktop = linear_probs(np.stack([desktop, desktop]), gram, clicks, CFG, rng)
    assert on_mobile[0] > 0.9 and on_desktop[1] > 0.9


def test_context_vectors_encode_history_match_hour_and_device():
    x = context_vectors(1000, np.array([1, 0]), 6.0, "tablet")
    assert x.shape == (2, CONTEXT_DIM)
    assert x[:, 0].tolist() == [1.0, 1.0] and x[0, 1] == pytest.approx(1.0)
    assert x[:, 2].tolist() == [1.0, 0.0]
    assert (x[0, 3], x[0, 4]) == (pytest.approx(1.0), pytest.approx(0.0, abs=1e-12))
    assert x[0, 5] == 1.0 and context_vectors(0, np.zeros(1), 0, None)[0, 5] == 0.0


def test_replay_runs_every_policy_under_one_budget():
    rng = np.random.default_rng(1)
    rounds = [(rng.permutation(30), {3}, 0) for _ in range(50)]
    out = replay(rounds, n_items=30, k=5, cfg=CFG, seed=0)
    assert set(out) == {GREEDY, EPSILON_GREEDY, THOMPSON, CONTEXTUAL}
    assert all(0 < out[p]["coverage"] <= 1 for p in out)


def _served(policy: str, seed: int, feedback=None, linear=None):
    cfg = ExploreConfig()
    slate = choose(policy, 30, 10, 0.3, cfg, np.random.default_rng(seed), feedback, linear)
    probs = slot_probs(
        policy, slate.order, 30, 10, 0.3, cfg, np.random.default_rng(seed), feedback, linear
    )
    return slate, probs


@pytest.mark.parametrize("policy", [GREEDY, EPSILON_GREEDY, THOMPSON, CONTEXTUAL])
def test_slot_probs_of_the_serving_policy_are_its_logged_propensities(policy):
    x = context_vectors(5, np.zeros(30), 12.0, None)
    linear = (x, np.zeros((30, CONTEXT_DIM, CONTEXT_DIM)), np.zeros((30, CONTEXT_DIM)))
    feedback = (np.arange(30.0), np.arange(30.0) % 3)
    for seed in range(5):
        slate, probs = _served(policy, seed, feedback, linear)
        np.testing.assert_allclose(probs, slate.propensity)


def test_slot_probs_of_other_policies_for_a_logged_slate():
    cfg = ExploreConfig()
    order = np.array([0, 1, 7, 2])  # the best two, an explored one, the next best
    rng = np.random.default_rng(0)
    assert slot_probs(GREEDY, order, 10, 4, 0.3, cfg, rng).tolist() == [1.0, 1.0, 0.0, 1.0]
    eps = slot_probs(EPSILON_GREEDY, order, 10, 4, 0.3, cfg, rng)
    np.testing.assert_allclose(eps, [0.7 + 0.3 / 10, 0.7 + 0.3 / 9, 0.3 / 8, 0.7 + 0.3 / 7])
    # Thompson, 4 slots at share 0.3: keeps the best 3 and draws slot 2 from items 3..9
    ts = slot_probs(THOMPSON, order, 10, 4, 0.3, cfg, rng)
    assert ts[[0, 1, 3]].tolist() == [1.0, 1.0, 1.0]
    assert ts[2] == pytest.approx(1 / 7, rel=0.2)  # no feedback: every draw about equal
    kept = slot_probs(THOMPSON, np.array([0, 1, 2, 3]), 10, 4, 0.3, cfg, rng)
    assert kept[2] == 0.0  # item 2 is kept, so Thompson never draws it into the explore slot
    assert slot_probs(GREEDY, order, 10, 4, 0.0, cfg, rng).tolist() == [1.0, 1.0, 0.0, 1.0]
