"""``ig tune``: hyper-parameters chosen on the validation split only.

A small grid, each setting fitted on the train part of ``ig train``'s own split and scored by
NDCG@20 on its validation users (the test split is never read): item-kNN's neighbourhood size
and shrinkage, and the learning rate of LightGCN and of BPR-MF (each early-stopped on
validation, as ``ig train`` does). The winners become the defaults in code
(``models.baselines.ItemKNNConfig``, ``models.lightgcn.LightGCNConfig.lr``,
``models.train.TrainConfig.bpr_mf_lr``); ``ig train`` then reports their test numbers once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from core.settings import Settings
from models.baselines import ItemKNN, ItemKNNConfig
from models.evaluate import evaluate
from models.lightgcn import LightGCNConfig
from models.train import TrainConfig, fit_early_stopped, prepare_data

NEIGHBOURS = (25, 50, 100, 200, 400)
SHRINKAGE = (0.0, 10.0, 50.0, 200.0)
LEARNING_RATES = (5e-3, 1e-2, 1.5e-2, 2e-2)


def tune(
    settings: Settings,
    cfg: TrainConfig,
    gcn_cfg: LightGCNConfig,
    learning_rates: tuple[float, ...] = LEARNING_RATES,
    out: Path | None = None,
) -> dict[str, Any]:
    """Every grid point's validation NDCG@20 and the best of each; written to ``out``
    (default ``<data>/tuning/<dataset>.json``)."""
    data = prepare_data(settings, cfg, np.random.default_rng(cfg.seed))
    n_items = len(data.items)
    knn = []
    for k, shrink in product(NEIGHBOURS, SHRINKAGE):
        model = ItemKNN(data.r_train, ItemKNNConfig(k, shrink))
        m = evaluate(model.scores, data.val_truth, data.r_train, n_items)
        knn.append({"neighbours": k, "shrinkage": shrink, "val_ndcg@20": m["ndcg@20"]})
        print(f"item-kNN k={k} shrinkage={shrink}: val NDCG@20 {m['ndcg@20']:.4f}")
    result: dict[str, Any] = {
        "dataset": cfg.dataset,
        "split": data.split.name,
        "metric": "val ndcg@20 (fit on train, early stopping on validation)",
        "itemknn": knn,
        "best_itemknn": max(knn, key=lambda r: r["val_ndcg@20"]),
        "base_config": gcn_cfg.as_dict(),
    }
    for name, layers in (("lightgcn", gcn_cfg.num_layers), ("bpr_mf", 0)):
        rows = []
        for lr in learning_rates:
            _, hist = fit_early_stopped(data, replace(gcn_cfg, lr=lr, num_layers=layers), name)
            best = int(np.argmax(hist["val_ndcg@20"]))
            rows.append({"lr": lr, "val_ndcg@20": hist["val_ndcg@20"][best], "epochs": best + 1})
            print(f"{name} lr={lr}: val NDCG@20 {rows[-1]['val_ndcg@20']:.4f}")
        result[name] = rows
        result[f"best_{name}"] = max(rows, key=lambda r: r["val_ndcg@20"])
    result["train_config"] = asdict(cfg)
    path = out or settings.data_dir / "tuning" / f"{cfg.dataset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"written: {path}")
    return result
