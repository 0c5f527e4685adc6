"""The ranker's inputs, defined once.

Training (point-in-time rows from Feast's offline store, models/ranker_training.py) and serving
(the API's online reads, api/scoring.py) build every input the ranker sees with these functions:
the user's vector (trained embedding moved toward the recent items the stream wrote, as of the
row's time), the GNN score of each candidate under that vector, the category affinity, and the
Feast columns. Given the same model, features and time, both paths produce the same matrix
(tests/integration/test_ranker_inputs.py feeds one user through both).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core import names as n
from models.data import one_hop

GNN_SCORE = "gnn_score"
GRAPH_FILTER_SCORE = "graph_filter_score"  # models.graph_filter over the shopper's items
SEQUENCE_SCORE = "sequence_score"  # models.sequence over the shopper's recent items
MODEL_SCORES = (GNN_SCORE, GRAPH_FILTER_SCORE, SEQUENCE_SCORE)  # model-score columns
CATEGORY_AFFINITY = "category_affinity"
TOP_CATEGORIES = n.full_name(n.USER_INTEREST, n.TOP_CATEGORIES)
TOP_CATEGORY_SCORES = n.full_name(n.USER_INTEREST, n.TOP_CATEGORY_SCORES)
RECENT_ITEMS = n.full_name(n.USER_INTEREST, n.RECENT_ITEMS)
RECENT_DECAY = 0.85  # weight of the recent item at position p (newest first): 0.85 ** p


@dataclass(frozen=True)
class ItemSpace:
    """One model's user and item vectors, as the GNN score reads them.

    users: user_id -> row of ``user_vectors`` [U, D]; index: item_id -> row of ``vectors``
    [C, D]; popularity [C] (distinct users, the one-hop degree minus one); placed [C] bool
    (False: the item has no vector, its GNN score is unknown); trained [U, C] (sparse): the
    items each user's embedding was trained on (None: unknown); filter [C, C] (sparse): the
    graph filter's item-item weights (models.graph_filter; None: no filter); sequence: the
    sequential transformer over the same rows (models.sequence.SequenceScorer; None: none).
    """

    users: Mapping[str, int]
    user_vectors: np.ndarray
    index: Mapping[str, int]
    vectors: np.ndarray
    popularity: np.ndarray
    placed: np.ndarray
    trained: sp.csr_matrix | None = None
    filter: sp.csr_matrix | None = None
    sequence: Any = None

    def user_vector(
        self, user_id: str, recent: Sequence[str], live_weight: float
    ) -> np.ndarray | None:
        """[D]: the trained embedding moved toward ``recent`` items (newest first) that it was
        not trained on (an embedding already holds its own edges: counting them again would
        pull every user toward their last purchases).

        The recent part is LightGCN's one-hop aggregation (items scaled by 1/sqrt(degree)),
        weighted ``RECENT_DECAY ** position`` and scaled to the embedding's length times
        ``live_weight``. A user without a trained embedding is embedded from recent items alone
        (the inductive path); None if neither is known.
        """
        idx = [self.index[i] for i in recent if i in self.index]
        idx = [r for r in idx if self.placed[r]]
        base = self.user_vectors[self.users[user_id]] if user_id in self.users else None
        if base is not None and self.trained is not None:
            known = set(self.trained[self.users[user_id]].indices.tolist())
            idx = [r for r in idx if r not in known]
        if not idx:
            return base
        w = RECENT_DECAY ** np.arange(len(idx), dtype=np.float32)
        agg = one_hop(w[None, :], self.vectors[idx], self.popularity[idx] + 1)[0]
        if base is None:
            return agg.astype(np.float32)
        scale = np.linalg.norm(base) / max(float(np.linalg.norm(agg)), 1e-12)
        return (base + live_weight * scale * agg).astype(np.float32)

    def gnn_scores(self, vec: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
        """Dot products [N] of ``vec`` [D] with items ``idx`` [N] (-1: unknown item); NaN where
        the user or the item has no vector."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.full(len(idx), np.nan)
        known = idx >= 0
        known[known] = self.placed[idx[known]]
        if vec is not None and known.any():
            out[known] = self.vectors[idx[known]] @ vec
        return out

    def filter_scores(self, user_id: str, recent: Sequence[str]) -> np.ndarray | None:
        """[C]: the graph filter's score of every item for the shopper's interaction row: the
        items their training history holds (``trained``) and their ``recent`` items (online,
        newest first), each counted once (models.graph_filter scores binary rows). Zeros for
        a shopper with neither; None without a filter."""
        if self.filter is None:
            return None
        rows = {self.index[i] for i in recent if i in self.index}
        if self.trained is not None and user_id in self.users:
            rows.update(self.trained[self.users[user_id]].indices.tolist())
        if not rows:
            return np.zeros(self.filter.shape[1])
        picked = self.filter[np.fromiter(rows, dtype=np.int64, count=len(rows))]
        return np.asarray(picked.sum(axis=0), dtype=np.float64).ravel()

    def sequence_scores(self, recent: Sequence[str]) -> np.ndarray | None:
        """[C]: the sequential transformer's score of every item as the shopper's next, after
        their ``recent`` items (newest first, as ``user_interest.recent_items`` holds them: fed
        oldest first); None without a model or without a known recent item."""
        if self.sequence is None:
            return None
        idx = [self.index[i] for i in reversed(list(recent)) if i in self.index]
        return self.sequence.scores(idx)  # type: ignore[no-any-return]


def pick(scores: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    """``scores`` [C] at catalogue rows ``idx`` [N] (-1: unknown item); NaN where unknown, and
    everywhere when ``scores`` is None."""
    idx = np.asarray(idx, dtype=np.int64)
    out = np.full(len(idx), np.nan)
    if scores is not None:
        known = idx >= 0
        out[known] = scores[idx[known]]
    return out


def category_affinity(
    top_categories: Sequence[object],
    top_scores: Sequence[object],
    item_categories: Sequence[object],
) -> np.ndarray:
    """The user's share of interest in each item's category [N], from user_interest's
    top_categories / top_category_scores (per row); 0 outside them."""
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


def ranker_inputs(
    columns: Sequence[str],
    user: Mapping[str, Any],
    items: Mapping[str, Sequence[Any]],
    item_categories: Sequence[object],
    model_scores: Mapping[str, np.ndarray],
) -> np.ndarray:
    """The ranker's input matrix [N, len(columns)] for one user and N candidates.

    user: the user side of ranker_v1 (``view__feature`` -> value, windowed counts as of the
    read time); items: the item side (``view__feature`` -> [N] values); item_categories [N];
    model_scores: each model's score [N] by its column (``GNN_SCORE``:
    :meth:`ItemSpace.gnn_scores`; ``GRAPH_FILTER_SCORE``: :meth:`ItemSpace.filter_scores`).
    NaN where a value is unknown.
    """
    size = len(item_categories)
    x = np.empty((size, len(columns)))
    for j, col in enumerate(columns):
        if col in MODEL_SCORES:
            x[:, j] = model_scores.get(col, np.full(size, np.nan))
        elif col == CATEGORY_AFFINITY:
            tops, weights = user.get(TOP_CATEGORIES), user.get(TOP_CATEGORY_SCORES)
            x[:, j] = category_affinity([tops] * size, [weights] * size, item_categories)
        elif col in items:
            x[:, j] = [_number(v) for v in items[col]]
        else:
            x[:, j] = _number(user.get(col))
    return x


def _number(value: Any) -> float:
    """A feature value as a float; NaN for None and missing values (offline NA included)."""
    return np.nan if value is None or value is pd.NA or value is pd.NaT else float(value)
