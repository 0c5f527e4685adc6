"""``ig simulate`` end to end on the slice: simulated shoppers through the real API (uvicorn)
and the real live job (``ig stream``), each policy on its own Redis loaded with the same
materialized project."""

import json

import pandas as pd
import pytest

from cli.simulate import (
    CLICKS_PNG,
    IMPRESSIONS,
    REGRET_PNG,
    RESULT_JSON,
    SimPlan,
    run_simulation,
)
from models.explore import GREEDY, THOMPSON
from models.ope import CLICK
from models.simulation import ShopConfig

pytestmark = pytest.mark.integration

# Every item appeals fully: slot p is clicked with probability 1 / (1 + p), so the first slot
# always is, and every full slate is as good as the oracle's (regret 0).
EAGER = ShopConfig(bought_appeal=1.0, category_appeal=1.0, base_appeal=1.0, new_item_appeal=1.0)


@pytest.fixture(scope="module")
def simulated(feast_project, trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("simulation")
    plan = SimPlan(
        rounds=3,
        shoppers_per_round=4,
        k=5,
        explore="0.2",
        policies=(GREEDY, THOMPSON),
        shoppers=12,
        shop=EAGER,
    )
    result = run_simulation(
        feast_project.settings,
        plan,
        out,
        materialized=feast_project.redis,
        artifacts=trained.parent,
    )
    return result, out


def test_simulation_writes_its_json_and_plots(simulated):
    result, out = simulated
    assert json.loads((out / RESULT_JSON).read_text()) == result
    for png in (CLICKS_PNG, REGRET_PNG):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(result["policies"]) == [GREEDY, THOMPSON]


def test_every_answer_and_click_reached_the_stream_and_the_live_job(simulated):
    result, _ = simulated
    for policy, r in result["policies"].items():
        assert "error" not in r, r
        assert r["answers"] == 12 and r["impressions"] == 12 * 5, policy
        assert r["clicks"] >= r["answers"]  # the first slot is always clicked
        assert r["stream"] == {
            "entries": r["impressions"] + r["clicks"],
            "impressions": r["impressions"],
            "clicks": r["clicks"],
            "dead_letters": 0,
        }
        feedback = r["feedback_online"]  # item_feedback read online through Feast
        assert feedback["clicked_items"] > 0
        assert feedback["with_online_clicks"] == feedback["clicked_items"], feedback
        assert feedback["online_clicks"] == pytest.approx(r["clicks"], rel=1e-3)
        assert feedback["online_examined"] > 0
        assert r["cumulative_clicks"][-1] == r["clicks"]
        assert r["regret"] == pytest.approx(0.0, abs=1e-9)  # all items equally appealing


def test_greedy_explores_nothing_and_thompson_its_share(simulated):
    result, _ = simulated
    greedy, thompson = result["policies"][GREEDY], result["policies"][THOMPSON]
    assert greedy["explored_share"] == 0.0 and greedy["served_as"] == [GREEDY]
    assert thompson["served_as"] == [THOMPSON]
    assert thompson["explored_share"] == pytest.approx(0.2)  # 1 of 5 slots per answer


def test_other_policies_are_estimated_from_the_exploring_policys_log(simulated):
    result, out = simulated
    log = pd.read_parquet(out / IMPRESSIONS)
    assert len(log) == 2 * 12 * 5 and log[CLICK].sum() == sum(
        r["clicks"] for r in result["policies"].values()
    )
    ope = result["ope"]
    assert ope["behavior"] == THOMPSON and ope["rows"] == 12 * 5
    greedy = ope[GREEDY]
    assert set(greedy) == {"logged", "ipw", "snips", "dr"}
    logged = result["policies"][GREEDY]["clicks"] / (12 * 5)
    assert greedy["logged"][0] == pytest.approx(logged, abs=1e-4)
    for low, value, high in ((v[1], v[0], v[2]) for v in greedy.values()):
        assert 0 <= low <= value <= high
