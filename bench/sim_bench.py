"""The closed feedback loop for ``make bench`` (cli/simulate.py): every policy of
``models.explore.POLICIES`` on the same simulated shoppers, through the real API and live job,
started from the bench's own materialized project (no second apply or materialize).

Figures per policy: clicks and regret (expected clicks lost to the best possible slates) over
the run, and the round in which the new item (high hidden appeal, never trained on) was first
clicked (null: never); and each other policy's CTR estimated off-policy from the exploring
policy's impressions (``sim_ope_<target>_<estimator>_ctr``) beside its own logged CTR. Small
on purpose (about 3 minutes on 2 cores): the differences between policies at this size are
within the noise; ``make simulate`` runs the larger version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cli.simulate import SimPlan, run_simulation
from core.redis_server import RedisServer
from core.settings import ROOT, Settings


def simulation_figures(
    settings: Settings,
    artifacts: Path,
    redis: RedisServer,
    rounds: int = 10,
    shoppers_per_round: int = 10,
    k: int = 10,
) -> dict[str, Any]:
    plan = SimPlan(rounds=rounds, shoppers_per_round=shoppers_per_round, k=k, shoppers=50)
    result = run_simulation(
        settings,
        plan,
        ROOT / "bench" / "results" / "simulation",
        materialized=redis,
        artifacts=artifacts,
    )
    out: dict[str, Any] = {
        "sim_rounds": rounds,
        "sim_shoppers_per_round": shoppers_per_round,
        "sim_k": k,
        "sim_explore": plan.explore,
        "sim_new_item": result["config"]["new_item"].get("item_id"),
    }
    for policy, r in result["policies"].items():
        if "error" in r:
            out[f"sim_error_{policy}"] = r["error"][:300]
            continue
        out[f"sim_clicks_{policy}"] = r["clicks"]
        out[f"sim_regret_{policy}"] = r["regret"]
        out[f"sim_new_item_rounds_to_discovery_{policy}"] = r["rounds_to_discovery"]
    ope = result["ope"]
    out["sim_ope_behavior"] = ope["behavior"]
    for target, named in ope.items():
        if isinstance(named, dict):  # a target: [value, ci_low, ci_high] per estimate
            for key, (value, low, high) in named.items():
                prefix = f"sim_ope_{target}_{key}_ctr"
                out.update({prefix: value, f"{prefix}_ci_low": low, f"{prefix}_ci_high": high})
    out["sim_seconds"] = result["wall_s"]
    return out
