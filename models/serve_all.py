"""The served artifact: after evaluation, the same recipe trained on every user and item.

The evaluated artifact (models.train) leaves out the test period, the inductive users held out
for their test and the cold items held out for theirs, so that its numbers are honest. What the
API serves should know everyone: this module retrains LightGCN on every event for the number
of epochs the evaluated run chose (early stopping on validation, then refit), places every
titled item by text too, and keeps the evaluated run's ranker and metrics (its manifest names
the evaluated artifact they come from).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core import names as n
from core.settings import Settings
from models import artifact
from models.data import IdMap, Split, edge_weights, interaction_matrix, load_events
from models.lightgcn import InterestGCN, LightGCNConfig, normalized_adjacency
from models.train import (
    Fitted,
    TrainConfig,
    TrainData,
    build_catalogue,
    package,
    text_cold_start,
)


def train_served(
    settings: Settings,
    cfg: TrainConfig,
    gcn_cfg: LightGCNConfig,
    evaluated: Path,
    out_root: Path | None = None,
) -> Path:
    """Train on every event of ``cfg.dataset`` with the evaluated run's epoch count; save it
    (``latest`` points at it) with the evaluated run's ranker and metrics."""
    torch.manual_seed(cfg.seed)
    metrics = json.loads((evaluated / artifact.METRICS).read_text())
    epochs = metrics["best_epochs"]["lightgcn"]
    data = all_data(settings, cfg)
    model = InterestGCN(len(data.users), len(data.items), 0, gcn_cfg)
    model.fit(data.r_hist, data.adj_hist, epochs=epochs, desc="lightgcn (every event)")
    with torch.no_grad():
        user_emb, item_emb = model.embeddings(data.adj_hist)
    fitted = Fitted(model, model, model, {}, {}, user_emb, item_emb)
    catalogue = build_catalogue(data.items_table, data.history, data.items)
    text = text_cold_start(data, catalogue, user_emb, item_emb, np.random.default_rng(cfg.seed))
    text.pop("metrics")
    evaluated_art = artifact.read(evaluated)
    if isinstance(metrics.get("ranker"), dict) and evaluated_art.ranker is not None:
        metrics["ranker"]["model"] = evaluated_art.ranker
    metrics[artifact.EVALUATION] = evaluated.name
    bundle = package(settings, cfg, gcn_cfg, data, fitted, metrics, catalogue, text)
    bundle.manifest[artifact.EVALUATION] = evaluated.name
    bundle.manifest["trained_on"] = f"every event ({len(data.events)}), {epochs} epochs"
    out = artifact.save(bundle, out_root or settings.artifacts_dir)
    print(f"served artifact (every user and item, {epochs} epochs): {out}")
    return out


def all_data(settings: Settings, cfg: TrainConfig) -> TrainData:
    """Every event as training data: no split, no held-out users or items."""
    canonical = settings.canonical_dir / cfg.dataset
    events = load_events(canonical)
    items_table = pd.read_parquet(canonical / "items.parquet")
    users = IdMap(sorted(events[n.USER_ID].unique()))
    items = IdMap(sorted(events[n.ITEM_ID].unique()))
    r_all = interaction_matrix(events, users, items)
    adj = normalized_adjacency(edge_weights(events, users, items, cfg.edge_half_life_days))
    none = events.iloc[:0]
    print(f"{cfg.dataset}, every event: {len(users)} users, {len(items)} items, {r_all.nnz} edges")
    return TrainData(
        events,
        items_table,
        Split("all events", events, none, none),
        events,
        set(),
        set(),
        users,
        items,
        r_all,
        r_all,
        {},
        {},
        adj,
        adj,
    )
