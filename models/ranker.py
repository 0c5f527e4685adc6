"""Ranker over the ranker_v1 FeatureService (point-in-time, from Feast) plus the GNN score."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from core import names as n

GNN_SCORE = "gnn_score"
CATEGORY_AFFINITY = "category_affinity"
LABEL = "label"
TOP_CATEGORIES = n.full_name(n.USER_INTEREST, n.TOP_CATEGORIES)
TOP_CATEGORY_SCORES = n.full_name(n.USER_INTEREST, n.TOP_CATEGORY_SCORES)


def category_affinity(
    top_categories: Sequence[object],
    top_scores: Sequence[object],
    item_categories: Sequence[object],
) -> np.ndarray:
    """The user's share of interest in each item's category [N], from user_interest's
    top_categories / top_category_scores (per row, offline and online alike); 0 outside them."""
    out = np.zeros(len(item_categories))
    rows = zip(top_categories, top_scores, item_categories, strict=True)
    for j, (cats, weights, item_cat) in enumerate(rows):
        listed = isinstance(cats, list | tuple | np.ndarray) and len(cats) > 0
        if not isinstance(item_cat, str) or not listed or weights is None:
            continue
        cats = list(cats)
        if item_cat in cats:
            total = float(np.sum(weights))
            out[j] = float(weights[cats.index(item_cat)]) / total if total > 0 else 0.0
    return out


def labelled_pairs(
    events: pd.DataFrame,
    item_ids: list[str],
    max_pos: int,
    seed: int,
    hard: Callable[[pd.Series], np.ndarray] | None = None,
    hard_share: float = 0.5,
) -> pd.DataFrame:
    """Positives: sampled (user, item, time) interactions; negatives: the same user and time
    with another item, uniformly drawn or (``hard_share`` of them, given ``hard``: users [N]
    -> item ids [N]) drawn from what retrieval would put in front of that user, as the ranker
    sees at serving. Feature time is one second before the event (no leakage)."""
    rng = np.random.default_rng(seed)
    pos = events.drop_duplicates([n.USER_ID, n.ITEM_ID])
    pos = pos.sample(min(max_pos, len(pos)), random_state=seed)
    base = pos[[n.USER_ID, n.EVENT_TIMESTAMP]].reset_index(drop=True)
    base[n.EVENT_TIMESTAMP] = base[n.EVENT_TIMESTAMP] - pd.Timedelta(seconds=1)
    positives = base.assign(**{n.ITEM_ID: pos[n.ITEM_ID].to_numpy(), LABEL: 1})
    negative_items = rng.choice(np.asarray(item_ids, dtype=object), len(base))
    if hard is not None:
        take = rng.random(len(base)) < hard_share
        negative_items[take] = hard(base[n.USER_ID][take])
    negatives = base.assign(**{n.ITEM_ID: negative_items, LABEL: 0})
    pairs = pd.concat([positives, negatives], ignore_index=True)
    return pairs.astype({n.USER_ID: object, n.ITEM_ID: object})


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric Feast features (``view__feature``); absolute timestamps are left out."""
    return [
        c
        for c in frame.columns
        if "__" in c and not c.endswith(n.LAST_EVENT_TS) and frame[c].dtype.kind in "biuf"
    ]


def restore_dropped(pairs: pd.DataFrame, got: pd.DataFrame) -> pd.DataFrame:
    """Feast 0.67's file store drops entity rows whose every feature row lies after the entity
    timestamp; at that time nothing was known, so such a row comes back with NaN features."""
    keys = [n.USER_ID, n.ITEM_ID, n.EVENT_TIMESTAMP]
    got = got.drop(columns=[c for c in pairs.columns if c not in keys], errors="ignore")
    got = got.drop_duplicates(keys)
    merged = pairs.merge(got.astype({n.USER_ID: object, n.ITEM_ID: object}), on=keys, how="left")
    return merged


@dataclass
class Ranker:
    """Gradient-boosted trees over numeric Feast features (+ the GNN score)."""

    columns: list[str]
    model: HistGradientBoostingClassifier = field(
        default_factory=lambda: HistGradientBoostingClassifier(max_iter=200, random_state=0)
    )

    def fit(self, frame: pd.DataFrame) -> Ranker:
        self.model.fit(frame[self.columns].astype(float).to_numpy(), frame[LABEL].to_numpy())
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.predict_matrix(frame[self.columns].astype(float).to_numpy())

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """x [N, len(columns)] (NaN where unknown) -> click probability [N]."""
        return self.model.predict_proba(x)[:, 1]

    def auc(self, frame: pd.DataFrame) -> float:
        return float(roc_auc_score(frame[LABEL], self.predict(frame)))
