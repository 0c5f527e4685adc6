"""``ig train``: the models."""

from __future__ import annotations

import argparse
import sys

from core.settings import get_settings


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
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from models.lightgcn import LightGCNConfig
    from models.train import TrainConfig, train

    s = get_settings()
    cfg = TrainConfig(
        dataset=args.dataset or s.dataset,
        split=args.split,
        seed=args.seed,
        ranker=not args.no_ranker,
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
    train(s, cfg, gcn)
    return 0
