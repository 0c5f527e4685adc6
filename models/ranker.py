"""Ranker over the ranker_v1 FeatureService (point-in-time, from Feast) plus the GNN score;
its inputs are built by models.ranker_features (training and serving alike)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from core import names as n

LABEL = "label"


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
    """Gradient-boosted trees over numeric Feast features (+ the GNN score)."""

    columns: list[str]
    seed: int = 0
    model: HistGradientBoostingClassifier = field(init=False)

    def __post_init__(self) -> None:
        self.model = HistGradientBoostingClassifier(max_iter=200, random_state=self.seed)

    def fit_matrix(self, x: np.ndarray, y: np.ndarray) -> Ranker:
        """x [N, len(columns)] (:func:`models.ranker_features.ranker_inputs`), y [N] 0/1."""
        self.model.fit(x, y)
        return self

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """x [N, len(columns)] (NaN where unknown) -> click probability [N]."""
        return self.model.predict_proba(x)[:, 1]

    def auc_matrix(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(roc_auc_score(y, self.predict_matrix(x)))
