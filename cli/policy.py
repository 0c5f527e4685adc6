"""``ig evaluate-policy``: off-policy evaluation of a logged policy (models/ope.py), on the Open
Bandit Dataset or on the platform's own impression log (the event stream, or a saved frame)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

    from models.ope import PolicyCheck


HOW = {
    "propensity": "its logged propensities (constant per item and position)",
    "frequency": "each item's frequency per position in its log (its propensities vary)",
    "exact per logged slot": "its exact probability of each logged slate prefix",
}
STREAM, OBD = "stream", "obd"


def register(sub: argparse._SubParsersAction) -> None:
    """``ig evaluate-policy``: policies are checked against ``models.ope.OBD_POLICIES``."""
    p = sub.add_parser(
        "evaluate-policy",
        help="estimate a policy's CTR from another policy's logs (IPW, SNIPS, DR)",
    )
    p.add_argument(
        "--data",
        default=OBD,
        help="logged data: obd (the Open Bandit Dataset sample), stream (the API's impressions "
        "and clicks on the project's event stream), or a .parquet impression log (ig simulate)",
    )
    p.add_argument(
        "--behavior",
        default=None,
        help="policy whose log is used (obd: random|bts, default random; own logs: a policy "
        "that served, default epsilon_greedy)",
    )
    p.add_argument(
        "--target",
        default=None,
        help="policy to evaluate (obd: bts|random, default bts; own logs: greedy|"
        "epsilon_greedy|thompson|contextual, default greedy)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_evaluate_policy)


def cmd_evaluate_policy(args: argparse.Namespace) -> int:
    try:
        check = _obd(args) if args.data == OBD else _own(args, get_settings())
    except (FileNotFoundError, ValueError) as exc:
        print(f"evaluate-policy failed: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(check), indent=2))
    else:
        _print_check(check, args.bootstrap)
    return 0


def _obd(args: argparse.Namespace) -> PolicyCheck:
    from models.ope import OBD_POLICIES, obd_check

    behavior, target = args.behavior or "random", args.target or "bts"
    if not {behavior, target} <= set(OBD_POLICIES) or behavior == target:
        raise ValueError(f"--behavior and --target: two different policies of {OBD_POLICIES}")
    return obd_check(
        get_settings().shared_data_dir, behavior, target, n_boot=args.bootstrap, seed=args.seed
    )


def _own(args: argparse.Namespace, settings: Settings) -> PolicyCheck:
    from models.ope import own_log_check

    log = read_own_log(args.data, settings)
    behavior, target = args.behavior or "epsilon_greedy", args.target or "greedy"
    return own_log_check(log, behavior, target, n_boot=args.bootstrap, seed=args.seed)


def read_own_log(data: str, settings: Settings) -> pd.DataFrame:
    """The impression log from the project's event stream (``stream``) or a saved frame."""
    import pandas as pd

    from models.ope import impression_log

    if data != STREAM:
        path = Path(data)
        if path.suffix != ".parquet" or not path.exists():
            raise FileNotFoundError(f"--data {data}: not obd, stream, or an existing .parquet")
        return pd.read_parquet(path)
    import redis

    from core.redis_server import redis_client

    client = redis_client(settings)
    try:
        log, skipped = impression_log(stream_events(client, settings.events_stream))
    except redis.RedisError as exc:
        raise ValueError(f"cannot read {settings.events_stream} from Redis: {exc}") from exc
    if log.empty:
        raise ValueError(
            f"no impressions with per-policy probabilities on {settings.events_stream} "
            f"({skipped} without): serve recommendations with IG_LOG_IMPRESSIONS=true first"
        )
    return log


def stream_events(client: Any, stream: str) -> Iterator[dict[str, Any]]:
    """Every event on ``stream`` as a dict, oldest first."""
    from core.bus import EVENT_FIELD, iter_entries

    for _, fields in iter_entries(client, stream):
        raw = fields.get(EVENT_FIELD.encode(), fields.get(EVENT_FIELD))
        if raw is not None:
            yield json.loads(raw)


def _print_check(check: PolicyCheck, n_boot: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"CTR of {check.target}: its own log, and estimated from the {check.behavior} log",
        caption=f"95% percentile bootstrap intervals, {n_boot} resamples",
    )
    for column in ("estimate", "CTR", "95% interval", "width"):
        table.add_column(column, justify="left" if column == "estimate" else "right")
    rows = [] if check.logged is None else [(f"{check.target} logged (on-policy)", check.logged)]
    rows += [(f"{name.upper()} from {check.behavior}", e) for name, e in check.estimates.items()]
    for label, e in rows:
        width = e.ci_high - e.ci_low
        table.add_row(label, f"{e.value:.4f}", f"{e.ci_low:.4f} – {e.ci_high:.4f}", f"{width:.4f}")
    Console().print(table)
    widest = max(e.ci_high - e.ci_low for _, e in rows)
    ctr = (check.logged or check.estimates["snips"]).value
    print(
        f"{check.target}'s action distribution: {HOW[check.target_dist]}. "
        f"{check.rows:,} logged rows with {check.clicks} clicks: the intervals are up to "
        f"{widest:.4f} wide, {widest / max(ctr, 1e-9):.1f}x the CTR, so only policies whose "
        f"CTRs differ by more than that can be told apart."
    )
