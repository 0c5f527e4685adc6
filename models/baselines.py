"""Standard baselines on the same split: most popular, item-kNN (cosine)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize


class Popularity:
    """Scores every item by its number of distinct users in training."""

    def __init__(self, seen: sp.csr_matrix) -> None:
        self.counts = np.asarray(seen.sum(axis=0)).ravel().astype(np.float32)  # [I]

    def scores(self, users: np.ndarray) -> np.ndarray:
        """[B] -> [B, I]"""
        return np.broadcast_to(self.counts, (len(users), len(self.counts)))


class ItemKNN:
    """Item-based collaborative filtering with cosine similarity and top-``k`` neighbours."""

    def __init__(self, seen: sp.csr_matrix, k: int = 100) -> None:
        cols = normalize(seen.tocsc().astype(np.float32), axis=0)
        sim = (cols.T @ cols).tocsr()  # [I, I]
        sim.setdiag(0)
        sim.eliminate_zeros()
        self.sim = _keep_top_k(sim, k)
        self.seen = seen

    def scores(self, users: np.ndarray) -> np.ndarray:
        return (self.seen[users] @ self.sim).toarray()


def _keep_top_k(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep each item's ``k`` most similar items; returned transposed so that
    ``history @ result`` scores item i by the similarities of i's neighbours the user has."""
    rows, cols, vals = [], [], []
    for r in range(m.shape[0]):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        keep = np.argpartition(-m.data[lo:hi], k)[:k] + lo if hi - lo > k else np.arange(lo, hi)
        rows.append(np.full(len(keep), r))
        cols.append(m.indices[keep])
        vals.append(m.data[keep])
    pruned = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=m.shape
    )
    return pruned.T.tocsr()
