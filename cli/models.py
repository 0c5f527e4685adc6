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
    p.set_defaults(func=cmd_train)

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


def cmd_train(args: argparse.Namespace) -> int:
    from models.lightgcn import LightGCNConfig
    from models.train import TrainConfig, train

    s = get_settings()
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
