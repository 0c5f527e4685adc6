"""``ig evaluate --all-splits``: every model alone and the served list on four splits, one table.

The splits: Online Retail (global time cut, and leave-last-out) and MovieLens-100k (time cut,
and leave-last-out). Each dataset gets a Feast project of its own under
``<data>/evaluation/<dataset>`` (import, backfill and ``feast apply``: the ranker's rows and the
replay read Feast's offline store, point in time), then each split is trained as ``ig train
--evaluation-only`` does, in a process of its own (so its peak memory is its own), and its
served list replayed (``ig evaluate``'s replay, the default order). The table (NDCG@20 per model
and split, the served list's ratio to the best tuned baseline, train seconds per model, peak
RSS) is printed and written to ``<artifacts>/evaluation.json``.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

from core.settings import Settings

SPLITS = (
    ("online-retail", "time"),
    ("movielens", "time"),
    ("movielens", "leave_last_out"),
    ("online-retail", "leave_last_out"),
)
MODELS = ("popularity", "itemknn", "bpr_mf", "lightgcn", "graph_filter", "sequence", "served")
BASELINES = ("popularity", "itemknn", "bpr_mf")


def project_settings(settings: Settings, dataset: str) -> Settings:
    """The settings of ``dataset``'s own evaluation project (data folder, Feast project)."""
    name = dataset.replace("-", "_")
    return settings.model_copy(
        update={
            "data_dir": settings.data_dir / "evaluation" / dataset,
            "dataset": dataset,
            "feast_project": f"{settings.feast_project}_eval_{name}"[:60],
            "artifacts_dir": settings.artifacts_dir / "evaluation" / dataset,
        }
    )


def prepare(settings: Settings) -> None:
    """Import, backfill and ``feast apply`` the project of ``settings`` unless already done."""
    from core import names as n
    from core.feast_store import feast_apply
    from core.importers import import_dataset
    from stream.backfill import run_backfill

    events = settings.canonical_dir / settings.dataset / "events.parquet"
    if not events.exists():
        import_dataset(settings.dataset, settings.shared_data_dir).write(events.parent)
    if not (settings.offline_dir / n.BACKFILL_MANIFEST).exists():
        run_backfill(
            events,
            settings.offline_dir,
            settings.data_dir / "dead_letters",
            batch_rows=settings.backfill_batch_rows,
        )
    if not (settings.data_dir / ".applied").exists():
        feast_apply(settings)
        (settings.data_dir / ".applied").write_text(settings.feast_project)


def run_split(settings: Settings, split: str, out: Path) -> None:
    """One split in this process: train (evaluation only), replay the served list, and write
    its metrics' summary to ``out``."""
    import torch

    from api.replay import evaluate_served
    from models.lightgcn import LightGCNConfig
    from models.train import TrainConfig, train

    torch.set_num_threads(2)
    cfg = TrainConfig(dataset=settings.dataset, split=split)
    path = train(settings, cfg, LightGCNConfig())
    metrics = evaluate_served(settings, path, both=False)
    out.write_text(json.dumps({**summary(metrics), "artifact": str(path)}))


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """What the table shows of one split's metrics.json."""
    models = metrics["models"]
    best = max(models[b]["ndcg@20"] for b in BASELINES)
    return {
        "users": models["served"]["users"],
        "ndcg@20": {m: models[m]["ndcg@20"] for m in MODELS if m in models},
        "recall@20": {m: models[m]["recall@20"] for m in MODELS if m in models},
        "served_over_best_baseline": round(models["served"]["ndcg@20"] / best, 4),
        "served_ordered_by": models["served"].get("ordered_by"),
        "blend": {k: metrics.get("ranker", {}).get(k) for k in ("blend_weight", "blend_shares")},
        "train_seconds": {
            k.removeprefix("train_seconds_"): v
            for k, v in metrics.items()
            if k.startswith("train_seconds")
        },
        "peak_rss_mb": metrics.get("peak_rss_mb"),
    }


def evaluate_all(settings: Settings, splits=SPLITS) -> dict[str, Any]:
    """Every split of ``splits`` (dataset, split), each trained in a process of its own; the
    table printed and written to ``<artifacts>/evaluation.json`` (splits already there and
    not run now keep their figures)."""
    results: dict[str, Any] = {}
    ctx = multiprocessing.get_context("spawn")  # torch and fork mix badly
    for dataset, split in splits:
        own = project_settings(settings, dataset)
        prepare(own)
        out = own.data_dir / f"summary-{split}.json"
        out.unlink(missing_ok=True)
        started = time.monotonic()
        proc = ctx.Process(target=run_split, args=(own, split, out))
        proc.start()
        proc.join()
        if proc.exitcode != 0 or not out.exists():
            raise RuntimeError(f"{dataset} {split}: training failed (exit {proc.exitcode})")
        results[f"{dataset} {split}"] = {
            **json.loads(out.read_text()),
            "wall_seconds": round(time.monotonic() - started, 1),
        }
    path = settings.artifacts_dir / "evaluation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(path.read_text()) if path.exists() else {}
    results = {**earlier, **results}  # splits not run this time keep their last figures
    path.write_text(json.dumps(results, indent=2))
    print_report(results)
    print(f"written: {path}")
    return results


def print_report(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="NDCG@20 per split (test users, full ranking; served: the replayed list)")
    table.add_column("model")
    for name in results:
        table.add_column(name, justify="right")
    for model in MODELS:
        cells = [f"{r['ndcg@20'].get(model, float('nan')):.4f}" for r in results.values()]
        table.add_row(model, *cells)
    table.add_row(
        "served / best baseline",
        *(f"{r['served_over_best_baseline']:.3f}" for r in results.values()),
    )
    table.add_row("peak RSS (MB)", *(f"{r['peak_rss_mb']:.0f}" for r in results.values()))
    table.add_row("wall seconds", *(f"{r['wall_seconds']:.0f}" for r in results.values()))
    Console().print(table)
