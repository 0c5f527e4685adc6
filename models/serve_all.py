"""The served artifact: after evaluation, the same recipe trained on every user and item.

The evaluated artifact (models.train) leaves out the test period, the inductive users held out
for their test and the cold items held out for theirs, so that its numbers are honest. What the
API serves should know everyone: this module retrains LightGCN on every event for the number
of epochs the evaluated run chose (early stopping on validation, then refit), fits the graph
filter on every event with the evaluated run's λ, places every titled item by text too, and
keeps the evaluated run's ranker and metrics (its manifest names the evaluated artifact they
come from). ``ig train`` starts that training in a process of its
own as soon as the epoch count is known (:class:`ServedTraining`), beside the evaluation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core import names as n
from core.settings import Settings
from models import artifact
from models.data import IdMap, Split, edge_weights, interaction_matrix, load_events
from models.graph_filter import GraphFilter, GraphFilterConfig
from models.lightgcn import InterestGCN, LightGCNConfig, normalized_adjacency
from models.train import (
    Fitted,
    TrainConfig,
    TrainData,
    build_catalogue,
    package,
    reuse_titles,
    text_cold_start,
)


def train_served(
    settings: Settings,
    cfg: TrainConfig,
    gcn_cfg: LightGCNConfig,
    evaluated: Path,
    out_root: Path | None = None,
    weights: Path | None = None,
) -> Path:
    """Train on every event of ``cfg.dataset`` with the evaluated run's epoch count (or take
    the ``weights`` :class:`ServedTraining` trained so); save it (``latest`` points at it) with
    the evaluated run's ranker and metrics."""
    torch.manual_seed(cfg.seed)
    metrics = json.loads((evaluated / artifact.METRICS).read_text())
    epochs = metrics["best_epochs"]["lightgcn"]
    data = all_data(settings, cfg)
    model = InterestGCN(len(data.users), len(data.items), 0, gcn_cfg)
    if weights is None:
        model.fit(data.r_hist, data.adj_hist, epochs=epochs, desc="lightgcn (every event)")
    else:
        model.model.load_state_dict(torch.load(weights))
        weights.unlink()
    with torch.no_grad():
        user_emb, item_emb = model.embeddings(data.adj_hist)
    fitted = Fitted(model, model, model, {}, {}, user_emb, item_emb)
    if isinstance(metrics.get("graph_filter"), dict):  # the evaluated run's filter, its λ
        fitted.filter = GraphFilter.fit(
            data.r_hist, GraphFilterConfig(), metrics["graph_filter"].get("l2")
        )
    catalogue = build_catalogue(data.items_table, data.history, data.items)
    evaluated_art = artifact.read(evaluated)
    titles = None  # the evaluated run's title embeddings, the encoder for the rest only
    if evaluated_art.text_embeddings is not None:
        titles = reuse_titles(evaluated_art.catalogue, evaluated_art.text_embeddings, catalogue)
    rng = np.random.default_rng(cfg.seed)
    text = text_cold_start(data, catalogue, user_emb, item_emb, rng, titles)
    text.pop("metrics")
    if evaluated_art.sequence_items is not None and evaluated_art.sequence_weights:
        # the evaluated run's sequence model as it is (it reads sequences, not users: nothing
        # to refit for new shoppers), its item table over this catalogue
        fitted.sequence_served = (
            evaluated_art.sequence_weights,
            reindex_rows(evaluated_art.sequence_items, evaluated_art.catalogue, catalogue),
        )
    if isinstance(metrics.get("ranker"), dict) and evaluated_art.ranker is not None:
        metrics["ranker"]["model"] = evaluated_art.ranker
    metrics[artifact.EVALUATION] = evaluated.name
    bundle = package(settings, cfg, gcn_cfg, data, fitted, metrics, catalogue, text)
    bundle.manifest[artifact.EVALUATION] = evaluated.name
    bundle.manifest["trained_on"] = f"every event ({len(data.events)}), {epochs} epochs"
    out = artifact.save(bundle, out_root or settings.artifacts_dir)
    print(f"served artifact (every user and item, {epochs} epochs): {out}")
    return out


def reindex_rows(rows: np.ndarray, old: pd.DataFrame, new: pd.DataFrame) -> np.ndarray:
    """``rows`` [len(old), D] in catalogue ``old``'s item order -> [len(new), D] in ``new``'s
    (zeros for items ``old`` did not have)."""
    where = {item: j for j, item in enumerate(old[n.ITEM_ID])}
    out = np.zeros((len(new), rows.shape[1]), dtype=rows.dtype)
    for j, item in enumerate(new[n.ITEM_ID]):
        if item in where:
            out[j] = rows[where[item]]
    return out


class ServedTraining:
    """The served model's LightGCN, trained on every event in a process of its own once the
    evaluated run knows its epoch count and has done its multi-threaded training
    (:meth:`start`, ``ig train`` passes it to models.train.train as ``after_fit``). It so
    overlaps the evaluated run's mostly single-threaded rest (ranker rows from Feast, the
    replay of the served list) on the other core; :meth:`result` waits for its weights."""

    def __init__(self, settings: Settings, cfg: TrainConfig, gcn_cfg: LightGCNConfig) -> None:
        self.settings, self.cfg, self.gcn_cfg = settings, cfg, gcn_cfg
        self.path = settings.data_dir / "training" / f"served-{os.getpid()}.pt"
        self.proc: Any = None

    def start(self, epochs: int) -> None:
        import multiprocessing

        self.path.parent.mkdir(parents=True, exist_ok=True)
        args = (self.settings, self.cfg, self.gcn_cfg, epochs, self.path)
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: torch and fork mix badly
        self.proc = ctx.Process(target=fit_served_weights, args=args, daemon=True)
        self.proc.start()

    def result(self) -> Path | None:
        """The trained weights' file; None if it was never started (train in process then)."""
        if self.proc is None:
            return None
        self.proc.join()
        if self.proc.exitcode != 0 or not self.path.exists():
            raise RuntimeError(
                f"training the served model failed (exit code {self.proc.exitcode}); the "
                "evaluated artifact is saved: run `ig train` again"
            )
        return self.path


def fit_served_weights(
    settings: Settings, cfg: TrainConfig, gcn_cfg: LightGCNConfig, epochs: int, out: Path
) -> None:
    """:class:`ServedTraining`'s process: LightGCN on every event for ``epochs`` on one thread
    (the parent keeps the other core), its weights saved to ``out`` (written aside, renamed)."""
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    data = all_data(settings, cfg)
    model = InterestGCN(len(data.users), len(data.items), 0, gcn_cfg)
    model.fit(data.r_hist, data.adj_hist, epochs=epochs, desc="lightgcn (every event)")
    tmp = out.with_suffix(".tmp")
    torch.save(model.model.state_dict(), tmp)
    os.replace(tmp, out)


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
