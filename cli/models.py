"""``ig train``: the models."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from core.settings import Settings, get_settings


def register(sub: argparse._SubParsersAction) -> None:
    """``ig train``: model options default to ``models.lightgcn.LightGCNConfig``'s values."""
    p = sub.add_parser("train", help="train LightGCN, baselines, text cold start, ranker")
    p.add_argument("--dataset", help="canonical dataset (default: IG_DATASET)")
    p.add_argument("--split", choices=["time", "leave_last_out"], default="time")
    p.add_argument("--epochs", type=int, help="max epochs (early stopping)")
    p.add_argument("--dim", type=int, help="embedding size")
    p.add_argument("--layers", type=int, help="LightGCN layers")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument(
        "--no-refit",
        action="store_true",
        help="serve the early-stopped model instead of retraining it on train+val",
    )
    p.add_argument(
        "--neg-power",
        type=float,
        help="negatives drawn by popularity**power (0: uniform)",
    )
    p.add_argument(
        "--neg-candidates",
        type=int,
        help="hard negatives: the highest-scored of this many sampled items (1: plain BPR)",
    )
    p.add_argument("--batch-size", type=int, help="pairs per BPR step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ranker", action="store_true", help="skip the Feast ranker step")
    p.add_argument(
        "--no-graph-filter",
        action="store_true",
        help="leave out the graph filter (EASE / GF-CF): no such retrieval source or ranker input",
    )
    p.add_argument(
        "--no-sequence",
        action="store_true",
        help="leave out the sequential transformer (SASRec over the recent items)",
    )
    p.add_argument("--sequence-epochs", type=int, help="the transformer's max epochs")
    p.add_argument(
        "--no-evaluate",
        action="store_true",
        help="skip `ig evaluate` (the served list replayed for every test user) after training",
    )
    p.add_argument(
        "--evaluation-only",
        action="store_true",
        help="stop after the evaluated artifact (skip retraining on every user and item)",
    )
    p.add_argument(
        "--incremental",
        action="store_true",
        help="warm-start from the serving artifact on what the platform gained since (live "
        "events, live catalogue), validate on the newest window, serve it only if not worse",
    )
    p.set_defaults(func=cmd_train)

    r = sub.add_parser(
        "retrain",
        help="run `ig train --incremental` on a schedule (the API picks up what it promotes)",
    )
    r.add_argument("--every", type=duration, default="15m", help="interval, e.g. 900, 90s, 15m, 1h")
    r.add_argument("--once", action="store_true", help="one cycle, then exit")
    r.add_argument(
        "--reload-url",
        help="also tell this API to reload when a cycle promotes (POST <url>/v1/admin/reload "
        "with IG_API_KEY); an API on this machine watches `latest` by itself",
    )
    r.set_defaults(func=cmd_retrain)

    b = sub.add_parser("rollback", help="serve the artifact served before the current one")
    b.add_argument("--to", help="an artifact version under IG_ARTIFACTS_DIR instead")
    b.set_defaults(func=cmd_rollback)

    t = sub.add_parser(
        "tune",
        help="choose item-kNN's neighbours/shrinkage and the GNN learning rates on validation",
    )
    t.add_argument("--dataset", help="canonical dataset (default: IG_DATASET)")
    t.add_argument("--split", choices=["time", "leave_last_out"], default="time")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_tune)

    e = sub.add_parser(
        "evaluate",
        help="replay the recommend pipeline (explore off) for every test user of an artifact",
    )
    e.add_argument("--version", default="latest", help="artifact under IG_ARTIFACTS_DIR")
    e.add_argument(
        "--all-splits",
        action="store_true",
        help="train and replay every model on Online Retail and MovieLens-100k, time cut and "
        "leave-last-out (projects of their own under IG_DATA_DIR/evaluation), one table",
    )
    e.set_defaults(func=cmd_evaluate)


def duration(text: str) -> float:
    """Seconds from ``900``, ``90s``, ``15m`` or ``1h``."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        seconds = float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError) as exc:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (900, 90s, 15m, 1h)") from exc
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"the interval must be positive, not {text!r}")
    return seconds


def cmd_train(args: argparse.Namespace) -> int:
    from models.lightgcn import LightGCNConfig
    from models.train import TrainConfig, train

    s = get_settings()
    if args.incremental:
        return 0 if _cycle(s, None) is not None else 2
    cfg = TrainConfig(
        dataset=args.dataset or s.dataset,
        split=args.split,
        seed=args.seed,
        ranker=not args.no_ranker,
        graph_filter=not args.no_graph_filter,
        sequence=not args.no_sequence,
        refit=not args.no_refit,
    )
    given = {  # options left out keep LightGCNConfig's defaults (defined once, there)
        "embedding_dim": args.dim,
        "num_layers": args.layers,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "neg_popularity_power": args.neg_power,
        "neg_candidates": args.neg_candidates,
        "max_epochs": args.epochs,
    }
    gcn = LightGCNConfig(seed=args.seed, **{k: v for k, v in given.items() if v is not None})
    if not (s.canonical_dir / cfg.dataset / "events.parquet").exists():
        print(
            f"no canonical data for {cfg.dataset}: run `ig import --dataset {cfg.dataset}`",
            file=sys.stderr,
        )
        return 2
    served = None
    if not args.evaluation_only:  # the served model trains beside the evaluation
        from models.serve_all import ServedTraining

        served = ServedTraining(s, cfg, gcn)
    from models.sequence import SequenceConfig

    seq = SequenceConfig(seed=args.seed)
    if args.sequence_epochs is not None:
        seq = replace(seq, max_epochs=args.sequence_epochs)
    out = train(s, cfg, gcn, after_fit=served.start if served else None, seq_cfg=seq)
    if not args.no_evaluate:
        _evaluate(s, out, both=False)  # the default order only: `ig evaluate` replays both
    if served is not None:
        from models.serve_all import train_served

        train_served(s, cfg, gcn, out, weights=served.result())  # latest: everyone
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from models.lightgcn import LightGCNConfig
    from models.train import TrainConfig
    from models.tune import tune

    s = get_settings()
    cfg = TrainConfig(dataset=args.dataset or s.dataset, split=args.split, seed=args.seed)
    tune(s, cfg, LightGCNConfig(seed=args.seed))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    s = get_settings()
    if args.all_splits:
        from cli.report import evaluate_all

        evaluate_all(s)
        return 0
    path = s.artifacts_dir / args.version
    if not path.exists():
        print(f"no artifact {path}: run `ig train` first", file=sys.stderr)
        return 2
    _evaluate(s, path)
    return 0


def _evaluate(s: Settings, path: Path, both: bool = True) -> None:
    """``served`` beside the raw models in the artifact's metrics.json, printed as a table."""
    from api.replay import RATIO, evaluate_served
    from models.train import print_table

    metrics = evaluate_served(s, path, both=both)
    print_table(metrics)
    print(f"{RATIO}: {metrics[RATIO]}")


def _cycle(s: Settings, reload_url: str | None) -> object | None:
    """One ``train --incremental`` cycle, printed; None when it could not run."""
    from core.redis_server import redis_client
    from models.artifact import ArtifactError
    from models.incremental import train_incremental

    try:
        outcome = train_incremental(s, redis_client(s, timeout=30.0))
    except ArtifactError as exc:
        print(f"no artifact to start from: {exc} (run `ig train` first)", file=sys.stderr)
        return None
    print(
        f"incremental: {outcome.new_events} new events, {outcome.new_users} new users, "
        f"{outcome.new_items} new items, {outcome.seconds} s; window NDCG@20 serving "
        f"{outcome.ndcg20_before} -> candidate {outcome.ndcg20_after} "
        f"({outcome.window_users} shoppers): {outcome.reason}"
    )
    if outcome.accepted and reload_url:
        _tell_reload(s, reload_url)
    return outcome


def _tell_reload(s: Settings, url: str) -> None:
    import httpx

    key = s.api_key.get_secret_value() if s.api_key else ""
    try:
        r = httpx.post(f"{url.rstrip('/')}/v1/admin/reload", headers={"X-API-Key": key}, timeout=60)
        print(f"reload {url}: {r.status_code} {r.text[:200]}")
    except httpx.HTTPError as exc:  # the API watches latest too: it catches up by itself
        print(f"reload {url} failed: {exc}", file=sys.stderr)


def cmd_retrain(args: argparse.Namespace) -> int:
    import time

    s = get_settings()
    while True:
        started = time.monotonic()
        if _cycle(s, args.reload_url) is None and args.once:
            return 2
        if args.once:
            return 0
        time.sleep(max(0.0, args.every - (time.monotonic() - started)))


def cmd_rollback(args: argparse.Namespace) -> int:
    from models.artifact import ArtifactError
    from models.incremental import rollback

    s = get_settings()
    try:
        old, new = rollback(s.artifacts_dir, args.to)
    except (ValueError, ArtifactError) as exc:
        print(f"cannot roll back: {exc}", file=sys.stderr)
        return 2
    print(f"latest: {old} -> {new} (an API watching latest loads it within IG_WATCH_S)")
    return 0
