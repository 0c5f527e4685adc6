"""Ranker over the ranker_v1 FeatureService (point-in-time, from Feast) plus the GNN score;
its inputs are built by models.ranker_features (training and serving alike).

What orders the served list is :meth:`Ranker.order_scores`: the trees' log-odds and the GNN
score, each standardised on the rows the ranker was fitted on, mixed as
``weight * ranker + (1 - weight) * gnn``. ``weight`` is chosen on validation users the trees
did not see (:func:`choose_blend`); 1 is the trees alone, 0 retrieval order.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from core import names as n
from models.ranker_features import GNN_SCORE

LABEL = "label"
BLEND_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
UNPLACED_Z = -10.0  # a candidate without a GNN score: below every placed one


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric Feast features (``view__feature``); absolute timestamps are left out."""
    return [
        c
        for c in frame.columns
        if "__" in c and not c.endswith(n.LAST_EVENT_TS) and frame[c].dtype.kind in "biuf"
    ]


def join_features(rows: pd.DataFrame, got: pd.DataFrame, key: str) -> pd.DataFrame:
    """``rows`` (in order) with the features Feast returned per (``key``, event_timestamp).

    Feast 0.67's file store collapses entity rows that share an entity and a time, and drops
    those whose every feature row lies after their time: so each entity is asked once per time
    (:func:`models.ranker_training.offline_features`) and joined back here; a row Feast dropped
    gets NaN features (nothing was known then)."""
    ts = n.EVENT_TIMESTAMP
    keys = [key, ts]
    got = got.drop(columns=[c for c in got.columns if c in rows.columns and c not in keys])
    got = got.drop_duplicates(keys).astype({key: object})
    got[ts] = got[ts].astype("datetime64[ns, UTC]")
    rows = rows.assign(**{ts: rows[ts].astype("datetime64[ns, UTC]")})
    return rows.merge(got, on=keys, how="left")


@dataclass
class Ranker:
    """Gradient-boosted trees over numeric Feast features (+ the GNN score), and the blend
    that orders a list by them and the GNN score (``weight`` 1: the trees alone)."""

    columns: list[str]
    seed: int = 0
    weight: float = 1.0
    scale: dict[str, list[float]] = field(default_factory=dict)  # "ranker"/"gnn": [mean, std]
    model: HistGradientBoostingClassifier = field(init=False)

    def __post_init__(self) -> None:
        self.model = HistGradientBoostingClassifier(max_iter=200, random_state=self.seed)

    def fit_matrix(self, x: np.ndarray, y: np.ndarray) -> Ranker:
        """x [N, len(columns)] (:func:`models.ranker_features.ranker_inputs`), y [N] 0/1;
        also the standardisation of both blend terms over these rows."""
        self.model.fit(x, y)
        self.scale = {"ranker": _mean_std(self.log_odds(x))}
        if GNN_SCORE in self.columns:
            gnn = x[:, self.columns.index(GNN_SCORE)]
            self.scale["gnn"] = _mean_std(gnn[np.isfinite(gnn)])
        return self

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """x [N, len(columns)] (NaN where unknown) -> click probability [N]."""
        return self.model.predict_proba(x)[:, 1]

    def log_odds(self, x: np.ndarray) -> np.ndarray:
        return self.model.decision_function(x)  # type: ignore[no-any-return]

    def order_scores(self, x: np.ndarray, weight: float | None = None) -> np.ndarray:
        """The served order's score [N]: ``weight`` (default: the chosen one) of the trees'
        standardised log-odds plus the rest of the standardised GNN score."""
        w = self.weight if weight is None else weight
        if w >= 1.0 or "gnn" not in self.scale:
            return self.predict_matrix(x)
        gnn = _standard(x[:, self.columns.index(GNN_SCORE)], self.scale["gnn"])
        gnn = np.where(np.isfinite(gnn), gnn, UNPLACED_Z)
        if w <= 0.0:
            return gnn
        return w * _standard(self.log_odds(x), self.scale["ranker"]) + (1.0 - w) * gnn

    def auc_matrix(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(roc_auc_score(y, self.predict_matrix(x)))

    def with_weight(self, weight: float | None) -> Ranker:
        """This ranker (same trees) with another blend weight; itself for None."""
        if weight is None:
            return self
        other = copy.copy(self)
        other.weight = float(weight)
        return other

    def describe(self) -> dict[str, Any]:
        """What ranker.json keeps beside the trees."""
        return {"columns": self.columns, "weight": self.weight, "scale": self.scale}


def choose_blend(
    x: np.ndarray,
    y: np.ndarray,
    users: np.ndarray,
    columns: list[str],
    seed: int,
    weights: Sequence[float] = BLEND_WEIGHTS,
) -> tuple[float, list[dict[str, float]]]:
    """The blend weight with the best NDCG@20 of each user's candidate list on half of the
    users (seeded), with trees fitted on the other half: validation rows only, and never rows
    the trees were fitted on. Returns (weight, every weight's NDCG@20); ties go to the lower
    weight (closer to retrieval order)."""
    ids = np.unique(users)
    held = np.random.default_rng(seed).permutation(ids)[: len(ids) // 2]
    scored = np.isin(users, held)
    trees = Ranker(columns, seed=seed).fit_matrix(x[~scored], y[~scored])
    rows = []
    for w in weights:
        scores = trees.order_scores(x[scored], w)
        rows.append({"weight": float(w), "ndcg@20": list_ndcg(scores, y[scored], users[scored])})
    best = max(rows, key=lambda r: (round(r["ndcg@20"], 6), -r["weight"]))
    return best["weight"], rows


def list_ndcg(scores: np.ndarray, y: np.ndarray, users: np.ndarray, k: int = 20) -> float:
    """Mean NDCG@k over users with a positive: each user's rows ordered by ``scores``."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    out = []
    for user in np.unique(users):
        mine = users == user
        labels = y[mine]
        if labels.sum() == 0:
            continue
        ranked = labels[np.argsort(-scores[mine], kind="stable")][:k]
        ideal = np.sort(labels)[::-1][:k]
        out.append(float(ranked @ discount[: len(ranked)]) / float(ideal @ discount[: len(ideal)]))
    return round(float(np.mean(out)), 6) if out else 0.0


def _mean_std(values: np.ndarray) -> list[float]:
    if len(values) == 0:
        return [0.0, 1.0]
    std = float(np.std(values))
    return [float(np.mean(values)), std if std > 0 else 1.0]


def _standard(values: np.ndarray, mean_std: list[float]) -> np.ndarray:
    return (values - mean_std[0]) / mean_std[1]
