import numpy as np
import pandas as pd
import pytest

from core.settings import get_settings
from models.ope import (
    CLICK,
    POSITION,
    PSCORE,
    RewardModelConfig,
    action_dist,
    bootstrap_ci,
    cross_fit_rewards,
    dr,
    estimate,
    evaluate_policy,
    ipw,
    load_obd,
    obd_figures,
    snips,
)

K = 10  # actions
THETA = np.linspace(0.05, 0.9, K)  # true click probability per action
TARGET = np.exp(np.linspace(-1.0, 1.5, K)) / np.exp(np.linspace(-1.0, 1.5, K)).sum()
TRUTH = float(TARGET @ THETA)  # the target policy's true CTR


def _uniform_log(size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Uniform logging over K actions; rewards from THETA; a perfect reward model."""
    action = rng.integers(0, K, size)
    return {
        "reward": (rng.random(size) < THETA[action]).astype(float),
        "pscore": np.full(size, 1.0 / K),
        "target_prob": TARGET[action],
        "q_logged": THETA[action],
        "q_target": np.full(size, TRUTH),
        "action": action,
    }


def _args(log: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return log["reward"], log["pscore"], log["target_prob"], log["q_logged"], log["q_target"]


def test_estimators_are_unbiased_over_replications():
    rng = np.random.default_rng(1)
    runs = [_uniform_log(400, rng) for _ in range(300)]
    ipws = np.array([ipw(*_args(r)[:3]) for r in runs])
    drs = np.array([dr(*_args(r)) for r in runs])
    naive = np.array([r["reward"].mean() for r in runs])  # the logging policy's CTR
    for values in (ipws, drs):
        assert abs(values.mean() - TRUTH) < 4 * values.std() / np.sqrt(len(values))
    # the check can fail: the unweighted logged mean is far off the target's CTR
    assert abs(naive.mean() - TRUTH) > 10 * naive.std() / np.sqrt(len(naive))


def test_estimate_intervals_contain_the_truth_and_are_ordered():
    log = _uniform_log(20_000, np.random.default_rng(2))
    out = estimate(*_args(log), n_boot=500, seed=0)
    assert set(out) == {"ipw", "snips", "dr"}
    for est in out.values():
        assert est.ci_low <= est.value <= est.ci_high
        assert est.ci_low <= TRUTH <= est.ci_high, est
    assert out["ipw"].value == pytest.approx(ipw(*_args(log)[:3]))
    assert out["snips"].value == pytest.approx(snips(*_args(log)[:3]))
    assert out["dr"].value == pytest.approx(dr(*_args(log)))


def test_dr_with_a_perfect_reward_model_is_narrower_than_ipw():
    out = estimate(*_args(_uniform_log(5_000, np.random.default_rng(3))), n_boot=500)
    width = {k: e.ci_high - e.ci_low for k, e in out.items()}
    assert width["dr"] < 0.75 * width["ipw"]  # sd ratio 0.55 in theory


def test_ipw_is_the_logged_mean_when_target_is_the_behaviour_policy():
    rng = np.random.default_rng(4)
    reward = (rng.random(1_000) < 0.3).astype(float)
    pscore = rng.uniform(0.01, 1.0, 1_000)
    assert ipw(reward, pscore, pscore) == reward.mean()
    assert snips(reward, pscore, pscore) == pytest.approx(reward.mean())


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(5).random(300)
    ones = np.ones_like(values)
    low, high = bootstrap_ci(values, ones, n_boot=1000, seed=7)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_ci(values, ones, n_boot=1000, seed=7)
    assert (low, high) != bootstrap_ci(values, ones, n_boot=1000, seed=8)
    # a 95% interval: +-1.96 standard errors (a 90% one would be 16% narrower)
    assert high - low == pytest.approx(2 * 1.96 * values.std() / np.sqrt(300), rel=0.08)


@pytest.mark.parametrize(
    ("pscore", "target_prob", "message"),
    [
        ([0.5, 0.0, 0.5], [0.5, 0.5, 0.5], "pscore must lie in"),
        ([0.5, -0.1, 0.5], [0.5, 0.5, 0.5], "pscore must lie in"),
        ([0.5, 0.5], [0.5, 0.5, 0.5], "one length"),
        ([0.5, 0.5, 0.5], [0.5, 1.5, 0.5], "target_prob must lie in"),
        ([0.5, np.nan, 0.5], [0.5, 0.5, 0.5], "non-finite"),
    ],
)
def test_estimators_refuse_invalid_input(pscore, target_prob, message):
    with pytest.raises(ValueError, match=message):
        ipw([0.0, 1.0, 0.0], pscore, target_prob)
    with pytest.raises(ValueError, match=message):
        estimate([0.0, 1.0, 0.0], pscore, target_prob, n_boot=10)


def test_dr_refuses_a_reward_model_of_another_length():
    with pytest.raises(ValueError, match="one length"):
        dr([0.0, 1.0], [0.5, 0.5], [0.5, 0.5], [0.1], [0.2, 0.2])


def _frame(action: np.ndarray, reward: np.ndarray, pscore: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"item_id": action, POSITION: 1, CLICK: reward, PSCORE: pscore})


def test_action_dist_uses_constant_propensities_else_frequencies():
    fixed = _frame(np.array([0, 1, 1, 2]), np.zeros(4), np.full(4, 1 / 3))
    table, how = action_dist(fixed)
    assert how == "propensity"
    assert table[1].tolist() == pytest.approx([1 / 3] * 3)
    drifting = _frame(np.array([0, 1, 1, 2]), np.zeros(4), np.array([0.2, 0.5, 0.6, 0.3]))
    table, how = action_dist(drifting)
    assert how == "frequency"
    assert table[1].tolist() == [0.25, 0.5, 0.25]


def test_cross_fit_keeps_a_rows_own_click_out_of_its_reward():
    action = np.arange(40)  # every item shown once: each click is the only one of its item
    reward = np.zeros(40)
    reward[0] = 1.0
    log = _frame(action, reward, np.full(40, 1 / 40))
    dist = pd.DataFrame({1: np.full(40, 1 / 40)}, index=action)
    q_logged, q_target = cross_fit_rewards(log, dist, RewardModelConfig(prior_strength=10))
    fold = np.random.default_rng(0).permutation(40) % 2  # as cross_fit_rewards draws it
    own = fold == fold[0]  # the rows in row 0's fold
    assert q_logged[0] == 0.0  # the other fold saw no click at all
    assert (q_logged[own] == 0).all() and (q_target[own] == 0).all()
    assert (q_logged[~own] > 0).all() and (q_logged[~own] < 0.14).all()  # one click, shrunk
    assert q_target[~own] == pytest.approx(np.full(20, 1 / 20))  # that fold's position CTR


def test_evaluate_policy_on_a_frame_matches_the_array_estimators():
    log = _uniform_log(3_000, np.random.default_rng(6))
    frame = _frame(log["action"], log["reward"], log["pscore"])
    dist = pd.DataFrame({1: TARGET}, index=np.arange(K))
    out = evaluate_policy(frame, dist, n_boot=200)
    assert out["ipw"].value == pytest.approx(ipw(*_args(log)[:3]))
    assert out["snips"].value == pytest.approx(snips(*_args(log)[:3]))
    assert out["dr"].ci_low <= TRUTH <= out["dr"].ci_high
    with pytest.raises(ValueError, match="lacks columns"):
        evaluate_policy(frame.drop(columns=[PSCORE]), dist)


def test_obd_sample_loads_and_gives_ordered_figures():
    data = get_settings().shared_data_dir
    for policy in ("random", "bts"):
        log = load_obd(data, policy)
        assert len(log) == 10_000
        assert log["item_id"].nunique() == 80
        assert sorted(log[POSITION].unique()) == [1, 2, 3]
        assert log["timestamp"].is_monotonic_increasing
    figures = obd_figures(data)
    names = ["logged", "ipw", "snips", "dr"]
    expected = {f"ope_obd_bts_{e}_ctr{s}" for e in names for s in ("", "_ci_low", "_ci_high")}
    assert set(figures) == expected | {"ope_obd_rows"}
    assert figures["ope_obd_rows"] == 10_000
    assert figures["ope_obd_bts_logged_ctr"] == 0.0042  # 42 clicks in the bts log
    for e in names:
        key = f"ope_obd_bts_{e}_ctr"
        assert 0 < figures[f"{key}_ci_low"] <= figures[key] <= figures[f"{key}_ci_high"] < 0.05
