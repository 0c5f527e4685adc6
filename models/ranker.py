"""Ranker over the ranker_v1 FeatureService (point-in-time, from Feast) plus the GNN score;
its inputs are built by models.ranker_features (training and serving alike).

What orders the served list is :meth:`Ranker.order_scores`: the trees' log-odds and the
retrieval models' scores (the GNN score, the graph filter's), each standardised on the rows the
ranker was fitted on, mixed as ``weight * trees + (1 - weight) * sum(shares[m] * model_m)``.
``weight`` and the models' ``shares`` are chosen on validation users the trees did not see
(:func:`choose_blend`); weight 1 is the trees alone, 0 retrieval order.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from core import names as n
from models.ranker_features import GNN_SCORE, MODEL_SCORES

LABEL = "label"
BLEND_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SHARE_STEP = 0.25  # the model scores' shares of the retrieval part: a grid of this step
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
    """Gradient-boosted trees over numeric Feast features (+ the model scores), and the blend
    that orders a list by them and the model scores (``weight`` 1: the trees alone).

    shares: each model-score column's share of the retrieval part (None: the GNN score
    alone); scale: ``ranker`` and each model-score column -> [mean, std] on the fitted rows."""

    columns: list[str]
    seed: int = 0
    weight: float = 1.0
    scale: dict[str, list[float]] = field(default_factory=dict)
    shares: dict[str, float] | None = None
    model: HistGradientBoostingClassifier = field(init=False)

    def __post_init__(self) -> None:
        # early stopping on a held-out tenth of the rows, whatever their number (scikit-learn's
        # "auto" only past 10,000 rows: a small project's trees overfit without it)
        self.model = HistGradientBoostingClassifier(
            max_iter=200, early_stopping=True, random_state=self.seed
        )
        if "gnn" in self.scale:  # saved before the graph filter: the GNN score's old key
            self.scale[GNN_SCORE] = self.scale.pop("gnn")
        if self.shares is None:
            self.shares = {GNN_SCORE: 1.0}

    def fit_matrix(self, x: np.ndarray, y: np.ndarray) -> Ranker:
        """x [N, len(columns)] (:func:`models.ranker_features.ranker_inputs`), y [N] 0/1;
        also the standardisation of every blend term over these rows."""
        self.model.fit(x, y)
        self.scale = {"ranker": _mean_std(self.log_odds(x))}
        for col in self.model_columns():
            values = x[:, self.columns.index(col)]
            self.scale[col] = _mean_std(values[np.isfinite(values)])
        return self

    def model_columns(self) -> list[str]:
        """The model-score columns among the inputs (models.ranker_features.MODEL_SCORES)."""
        return [c for c in MODEL_SCORES if c in self.columns]

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """x [N, len(columns)] (NaN where unknown) -> click probability [N]."""
        return self.model.predict_proba(x)[:, 1]

    def log_odds(self, x: np.ndarray) -> np.ndarray:
        return self.model.decision_function(x)  # type: ignore[no-any-return]

    def order_scores(
        self,
        x: np.ndarray,
        weight: float | None = None,
        shares: dict[str, float] | None = None,
    ) -> np.ndarray:
        """The served order's score [N]: ``weight`` (default: the chosen one) of the trees'
        standardised log-odds plus the rest of the model scores, each standardised, mixed by
        ``shares`` (default: the chosen ones). A model score unknown for a row (NaN) counts as
        below every known one."""
        w = self.weight if weight is None else weight
        shares = self.shares if shares is None else shares
        used = {c: s for c, s in (shares or {}).items() if s > 0 and c in self.scale}
        if w >= 1.0 or not used:
            return self.predict_matrix(x)
        retrieval = np.zeros(len(x))
        for col, share in used.items():
            z = _standard(x[:, self.columns.index(col)], self.scale[col])
            retrieval += share * np.where(np.isfinite(z), z, UNPLACED_Z)
        if w <= 0.0:
            return retrieval
        return w * _standard(self.log_odds(x), self.scale["ranker"]) + (1.0 - w) * retrieval

    def auc_matrix(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(roc_auc_score(y, self.predict_matrix(x)))

    def with_weight(self, weight: float | None, shares: dict[str, float] | None = None) -> Ranker:
        """This ranker (same trees) with another blend weight and/or other shares of the
        model scores; itself for None and None. Shares must name model-score columns."""
        if weight is None and shares is None:
            return self
        other = copy.copy(self)
        if weight is not None:
            other.weight = float(weight)
        if shares is not None:
            unknown = set(shares) - set(self.model_columns())
            if unknown:
                raise ValueError(
                    f"ranker shares name {sorted(unknown)}: not among this ranker's model "
                    f"scores {self.model_columns()}"
                )
            other.shares = {c: float(v) for c, v in shares.items()}
        return other

    def describe(self) -> dict[str, Any]:
        """What ranker.json keeps beside the trees."""
        return {
            "columns": self.columns,
            "weight": self.weight,
            "shares": self.shares,
            "scale": self.scale,
        }


def choose_blend(
    x: np.ndarray,
    y: np.ndarray,
    users: np.ndarray,
    columns: list[str],
    seed: int,
    weights: Sequence[float] = BLEND_WEIGHTS,
    share_step: float = SHARE_STEP,
) -> tuple[float, dict[str, float], list[dict[str, Any]]]:
    """The blend (trees' weight, model scores' shares) with the best NDCG@20 of each user's
    candidate list on half of the users (seeded), with trees fitted on the other half:
    validation rows only, and never rows the trees were fitted on. With several model scores
    (the GNN's, the graph filter's, the sequence model's) their shares of the retrieval part
    are searched too, every split of 1 in steps of ``share_step``. Returns (weight, shares,
    every point's NDCG@20); ties go to the lower weight (closer to retrieval order), then to
    the larger share of the first model (the GNN)."""
    ids = np.unique(users)
    held = np.random.default_rng(seed).permutation(ids)[: len(ids) // 2]
    scored = np.isin(users, held)
    trees = Ranker(columns, seed=seed).fit_matrix(x[~scored], y[~scored])
    models = trees.model_columns()
    mixes = [dict(zip(models, m, strict=True)) for m in _splits(len(models), share_step)]
    rows: list[dict[str, Any]] = []
    for w in weights:
        for mix in mixes:
            scores = trees.order_scores(x[scored], w, mix)
            ndcg = list_ndcg(scores, y[scored], users[scored])
            rows.append({"weight": float(w), "shares": mix, "ndcg@20": ndcg})

    def rank(r: dict[str, Any]) -> tuple[float, float, float]:
        first = list(r["shares"].values())[0] if r["shares"] else 1.0
        return round(r["ndcg@20"], 6), -r["weight"], first

    best = max(rows, key=rank)
    return best["weight"], best["shares"] or {GNN_SCORE: 1.0}, rows


def _splits(parts: int, step: float) -> list[tuple[float, ...]]:
    """Every way to split 1 into ``parts`` shares that are multiples of ``step`` (one part: 1)."""
    if parts == 0:
        return [()]
    units = round(1 / step)
    out = []
    for combo in product(range(units + 1), repeat=parts):
        if sum(combo) == units:
            out.append(tuple(c / units for c in combo))
    return out


def list_ndcg(scores: np.ndarray, y: np.ndarray, users: np.ndarray, k: int = 20) -> float:
    """Mean NDCG@k over users with a positive: each user's rows ordered by ``scores`` (ties in
    row order)."""
    _, group = np.unique(users, return_inverse=True)
    y = np.asarray(y, dtype=np.float64)
    rows = np.arange(len(y))
    order = np.lexsort((rows, -np.asarray(scores, dtype=np.float64), group))
    ideal_order = np.lexsort((rows, -y, group))
    starts = np.searchsorted(group[order], np.arange(group.max() + 1 if len(group) else 0))
    position = rows - np.repeat(starts, np.bincount(group, minlength=len(starts)))
    gain = np.where(position < k, 1.0 / np.log2(position + 2.0), 0.0)
    dcg = np.bincount(group[order], weights=y[order] * gain, minlength=len(starts))
    idcg = np.bincount(group[ideal_order], weights=y[ideal_order] * gain, minlength=len(starts))
    has = idcg > 0
    return round(float(np.mean(dcg[has] / idcg[has])), 6) if has.any() else 0.0


def _mean_std(values: np.ndarray) -> list[float]:
    if len(values) == 0:
        return [0.0, 1.0]
    std = float(np.std(values))
    return [float(np.mean(values)), std if std > 0 else 1.0]


def _standard(values: np.ndarray, mean_std: list[float]) -> np.ndarray:
    return (values - mean_std[0]) / mean_std[1]
