"""Off-policy evaluation on the platform's own impression log (models.ope.impression_log)."""

import numpy as np
import pytest

from core import names as n
from models.explore import EPSILON_GREEDY, GREEDY, THOMPSON, ExploreConfig, choose, slot_probs
from models.ope import CLICK, impression_log, own_log_check

N_ITEMS, K, SHARE = 12, 4, 0.3
APPEAL = np.linspace(0.6, 0.05, N_ITEMS)  # true click probability of candidate j (j=0 best)
CFG = ExploreConfig()


def _events(policy: str, requests: int, rng: np.random.Generator) -> list[dict]:
    """What the API writes: each request's impressions (with every policy's slot
    probabilities) and a click event for each impression the shopper clicked."""
    events = []
    for r in range(requests):
        slate = choose(policy, N_ITEMS, K, SHARE, CFG, rng)
        probs = {
            p: slot_probs(p, slate.order, N_ITEMS, K, SHARE, CFG, rng)
            for p in (GREEDY, EPSILON_GREEDY, THOMPSON)
        }
        for pos, (j, prop) in enumerate(zip(slate.order, slate.propensity, strict=True)):
            base = {n.REQUEST_ID: f"{policy}-{r}", n.ITEM_ID: f"i{j}", n.POSITION: pos}
            events.append(
                base
                | {
                    n.EVENT_TYPE: "impression",
                    n.POLICY: policy,
                    n.PROPENSITY: float(prop),
                    n.PROPENSITIES: {p: float(v[pos]) for p, v in probs.items()},
                }
            )
            if rng.random() < APPEAL[j]:
                events.append(base | {n.EVENT_TYPE: "click"})
    return events


def test_impression_log_joins_clicks_to_their_slot_and_skips_rows_without_probabilities():
    events = [
        {n.EVENT_TYPE: "impression", n.REQUEST_ID: "a", n.ITEM_ID: "x", n.POSITION: 0,
         n.POLICY: GREEDY, n.PROPENSITY: 1.0, n.PROPENSITIES: {GREEDY: 1.0}},
        {n.EVENT_TYPE: "impression", n.REQUEST_ID: "a", n.ITEM_ID: "y", n.POSITION: 1,
         n.POLICY: GREEDY, n.PROPENSITY: 1.0, n.PROPENSITIES: {GREEDY: 1.0}},
        {n.EVENT_TYPE: "impression", n.REQUEST_ID: "s", n.ITEM_ID: "x", n.POLICY: "search"},
        {n.EVENT_TYPE: "view", n.REQUEST_ID: "a", n.ITEM_ID: "y"},
        {n.EVENT_TYPE: "click", n.REQUEST_ID: "b", n.ITEM_ID: "x"},  # another request's
        {n.EVENT_TYPE: "purchase", n.ITEM_ID: "x"},  # not from an answer
    ]  # fmt: skip
    log, skipped = impression_log(events)
    assert skipped == 1
    assert log[[n.ITEM_ID, CLICK, "p_greedy"]].values.tolist() == [["x", 0, 1.0], ["y", 1, 1.0]]


def test_own_log_estimates_greedy_from_epsilon_greedy_within_its_interval():
    rng = np.random.default_rng(3)
    log, _ = impression_log(_events(EPSILON_GREEDY, 3000, rng) + _events(GREEDY, 3000, rng))
    check = own_log_check(log, EPSILON_GREEDY, GREEDY, n_boot=200, alpha=0.01)
    truth = APPEAL[:K].mean()  # greedy shows the best K every time
    assert check.logged is not None and check.logged.ci_low <= truth <= check.logged.ci_high
    for name in ("ipw", "snips", "dr"):  # 99% intervals (19 of 20 seeds hold all four)
        e = check.estimates[name]
        assert e.ci_low <= truth <= e.ci_high, (name, e, truth)
        assert abs(e.value - truth) < 0.02
    behaviour_ctr = log[log["policy"] == EPSILON_GREEDY][CLICK].mean()
    assert check.estimates["snips"].value > behaviour_ctr + 0.02  # it sees greedy is better


def test_own_log_check_says_what_is_missing():
    log, _ = impression_log(_events(GREEDY, 5, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="no impressions served by 'thompson'"):
        own_log_check(log, "thompson", GREEDY)
    with pytest.raises(ValueError, match="no probabilities for 'other'"):
        own_log_check(log, GREEDY, "other")
