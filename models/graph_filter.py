"""A training-free graph filter over the item-item graph: EASE, or GF-CF's linear filter.

Both turn the user-item interaction matrix R [U, I] into an item-item weight matrix W [I, I]
with linear algebra alone (no gradient steps, seconds on CPU), and score a shopper by their
interaction row: ``scores = r_u @ W``. A new interaction changes the row, so the scores follow
it at once with no retraining (the API builds the row from the items the shopper bought in
training and their ``recent_items`` online, :meth:`models.ranker_features.ItemSpace.filter_scores`).

- **EASE** (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): the
  closed-form ridge regression of each item's column on every other item's, with a zero
  diagonal: ``P = (RᵀR + λI)⁻¹``, ``W = -P / diag(P)``, ``diag(W) = 0``. A dense I x I inverse:
  used up to ``GraphFilterConfig.max_dense_items`` items.
- **GF-CF, linear part** (Shen et al., "How Powerful is Graph Convolution for
  Recommendation?", CIKM 2021): the normalised item-item graph ``W = R̃ᵀR̃`` with
  ``R̃ = D_u^-1/2 R D_i^-1/2``, sparse, computed in item blocks: for larger catalogues.

Either way each item keeps its ``keep`` largest weights (a sparse W: small in the artifact,
fast to score with).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

EASE, GFCF = "ease", "gfcf"
L2_GRID = (100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0)  # EASE's λ: ig train picks on validation
DEFAULT_L2 = 400.0  # without a choice (GraphFilterConfig.l2 unset and no validation)


@dataclass(frozen=True)
class GraphFilterConfig:
    """kind: ``ease`` or ``gfcf`` (``auto``: EASE up to ``max_dense_items`` items, else
    GF-CF); l2: EASE's λ (None: chosen on validation from ``L2_GRID``); keep: weights kept per
    item."""

    kind: str = "auto"
    l2: float | None = None
    max_dense_items: int = 12_000  # a dense I x I float64 inverse: 1.15 GB at 12k items
    keep: int = 500

    def resolved_kind(self, n_items: int) -> str:
        if self.kind != "auto":
            return self.kind
        return EASE if n_items <= self.max_dense_items else GFCF

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def binary(r: sp.spmatrix) -> sp.csr_matrix:
    """``r`` with every stored entry set to 1 (an interaction, whatever its count or weight)."""
    out = sp.csr_matrix(r, dtype=np.float32, copy=True)
    out.data[:] = 1.0
    out.eliminate_zeros()
    return out


def ease(r: sp.csr_matrix, l2: float) -> np.ndarray:
    """EASE's weights [I, I] (float32, zero diagonal) of the binary interactions ``r``."""
    gram = (r.T @ r).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    w = p / -np.diag(p)
    np.fill_diagonal(w, 0.0)
    return w.astype(np.float32)


def gfcf_linear(r: sp.csr_matrix, keep: int, block: int = 2048) -> sp.csr_matrix:
    """GF-CF's normalised item-item graph R̃ᵀR̃ [I, I], each row pruned to its ``keep``
    largest weights, built ``block`` items at a time (never the full product in memory)."""
    du = np.asarray(r.sum(axis=1)).ravel()
    di = np.asarray(r.sum(axis=0)).ravel()
    norm = (
        sp.diags(1 / np.sqrt(np.maximum(du, 1))) @ r @ sp.diags(1 / np.sqrt(np.maximum(di, 1)))
    ).tocsc()
    t = norm.T.tocsr()
    parts = []
    for start in range(0, r.shape[1], block):
        rows = (t[start : start + block] @ norm).tocsr()
        rows.setdiag(0)
        parts.append(_prune_rows(rows, keep))
    return sp.vstack(parts).tocsr().astype(np.float32)


def _prune_rows(m: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Each row's ``keep`` entries of the largest magnitude (EASE's negative weights count)."""
    m = m.tocsr()
    m.eliminate_zeros()
    rows, cols, vals = [], [], []
    for r in range(m.shape[0]):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        top = (
            np.argpartition(-np.abs(m.data[lo:hi]), keep)[:keep] + lo
            if hi - lo > keep
            else np.arange(lo, hi)
        )
        rows.append(np.full(len(top), r))
        cols.append(m.indices[top])
        vals.append(m.data[top])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=m.shape
    )


class GraphFilter:
    """A fitted graph filter: ``weights`` [I, I] (sparse; row = the item a shopper has)."""

    def __init__(self, weights: sp.csr_matrix, kind: str, l2: float | None) -> None:
        self.weights, self.kind, self.l2 = weights.tocsr(), kind, l2
        self.search: list[dict[str, float]] = []  # choose_l2's grid, when it chose l2

    @classmethod
    def fit(cls, r: sp.spmatrix, cfg: GraphFilterConfig, l2: float | None = None) -> GraphFilter:
        """The filter of interactions ``r`` [U, I]; ``l2`` overrides ``cfg.l2`` (EASE)."""
        x = binary(r)
        kind = cfg.resolved_kind(x.shape[1])
        if kind == EASE:
            lam = l2 if l2 is not None else cfg.l2 if cfg.l2 is not None else DEFAULT_L2
            dense = ease(x, lam)
            return cls(_prune_rows(sp.csr_matrix(dense), cfg.keep), EASE, lam)
        if kind == GFCF:
            return cls(gfcf_linear(x, cfg.keep), GFCF, None)
        raise ValueError(f"unknown graph filter kind {kind!r} (ease, gfcf or auto)")

    def scores(self, rows: sp.spmatrix) -> np.ndarray:
        """Interaction rows [B, I] -> scores [B, I]."""
        return np.asarray((binary(rows) @ self.weights).todense())

    def scorer(self, r: sp.csr_matrix):
        """user indices [B] -> scores [B, I] for the users of ``r`` (models.evaluate's form)."""
        return lambda users: self.scores(r[users])

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "l2": self.l2, "nnz": int(self.weights.nnz)}


def choose_l2(
    r_train: sp.csr_matrix,
    validate,
    cfg: GraphFilterConfig,
    grid: Sequence[float] = L2_GRID,
) -> tuple[float | None, list[dict[str, float]]]:
    """EASE's λ with the best ``validate(filter)`` (validation NDCG@20) over ``grid``, fitted on
    ``r_train``; (None, []) for GF-CF (nothing to choose) or when ``cfg.l2`` is set."""
    if cfg.resolved_kind(r_train.shape[1]) != EASE or cfg.l2 is not None:
        return cfg.l2, []
    rows = []
    for lam in grid:
        rows.append({"l2": lam, "val_ndcg@20": validate(GraphFilter.fit(r_train, cfg, lam))})
        print(f"graph filter (EASE) λ={lam:g}: val NDCG@20 {rows[-1]['val_ndcg@20']:.4f}")
    best = max(rows, key=lambda row: row["val_ndcg@20"])
    return best["l2"], rows
