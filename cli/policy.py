"""``ig evaluate-policy``: off-policy evaluation of a logged policy (models/ope.py)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

from core.settings import get_settings

if TYPE_CHECKING:
    from models.ope import PolicyCheck


HOW = {
    "propensity": "its logged propensities (constant per item and position)",
    "frequency": "each item's frequency per position in its log (its propensities vary)",
}


def register(sub: argparse._SubParsersAction) -> None:
    """``ig evaluate-policy``: policies are checked against ``models.ope.OBD_POLICIES``."""
    p = sub.add_parser(
        "evaluate-policy",
        help="estimate a policy's CTR from another policy's logs (IPW, SNIPS, DR)",
    )
    p.add_argument(
        "--data", choices=["obd"], default="obd", help="logged data (obd: Open Bandit Dataset)"
    )
    p.add_argument("--behavior", default="random", help="policy whose log is used (random|bts)")
    p.add_argument("--target", default="bts", help="policy to evaluate (bts|random)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_evaluate_policy)


def cmd_evaluate_policy(args: argparse.Namespace) -> int:
    from models.ope import OBD_POLICIES, obd_check

    policies = {args.behavior, args.target}
    if not policies <= set(OBD_POLICIES) or len(policies) != 2:
        print(
            f"--behavior and --target: two different policies of {OBD_POLICIES}",
            file=sys.stderr,
        )
        return 2
    try:
        check = obd_check(
            get_settings().shared_data_dir,
            args.behavior,
            args.target,
            n_boot=args.bootstrap,
            seed=args.seed,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"evaluate-policy failed: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(check), indent=2))
    else:
        _print_check(check, args.bootstrap)
    return 0


def _print_check(check: PolicyCheck, n_boot: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"CTR of {check.target}: its own log, and estimated from the {check.behavior} log",
        caption=f"95% percentile bootstrap intervals, {n_boot} resamples",
    )
    for column in ("estimate", "CTR", "95% interval", "width"):
        table.add_column(column, justify="left" if column == "estimate" else "right")
    rows = [(f"{check.target} logged (on-policy)", check.logged)]
    rows += [(f"{name.upper()} from {check.behavior}", e) for name, e in check.estimates.items()]
    for label, e in rows:
        width = e.ci_high - e.ci_low
        table.add_row(label, f"{e.value:.4f}", f"{e.ci_low:.4f} – {e.ci_high:.4f}", f"{width:.4f}")
    Console().print(table)
    widest = max(e.ci_high - e.ci_low for _, e in rows)
    print(
        f"{check.target}'s action distribution: {HOW[check.target_dist]}. "
        f"{check.rows:,} logged rows with {check.clicks} clicks carry little signal: the "
        f"intervals are up to {widest:.4f} wide, about {widest / check.logged.value:.1f}x the "
        f"logged CTR, so only policies whose CTRs differ by more than that can be told apart."
    )
