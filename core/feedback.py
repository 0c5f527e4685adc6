"""The contextual policy's per-item sums in their stored form (item_feedback.linear_stats).

For contexts x of length D (``core.names.CONTEXT_DIM``), an item keeps the examination-weighted
sum of x x^T over its impressions (the Gram matrix, [D, D], symmetric) and the sum of x over its
clicks ([D]). Stored as text, like ``count_buckets``: the Gram matrix's upper triangle row by
row, then the click sum, comma-separated; empty: nothing learned yet.
"""

from __future__ import annotations

import numpy as np

from core import names as n

_UPPER = np.triu_indices(n.CONTEXT_DIM)


def encode_linear(gram: np.ndarray, clicks: np.ndarray) -> str:
    """Gram [D, D] and click sum [D] -> the stored text."""
    values = np.concatenate([np.asarray(gram)[_UPPER], np.asarray(clicks)])
    return ",".join(f"{v:.6g}" for v in values)


def decode_linear(stored: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The stored text (or None / empty: nothing learned) -> (gram [D, D], clicks [D])."""
    dim = n.CONTEXT_DIM
    gram, clicks = np.zeros((dim, dim)), np.zeros(dim)
    if not isinstance(stored, str) or not stored:
        return gram, clicks
    values = np.array(stored.split(","), dtype=np.float64)
    upper = len(_UPPER[0])
    if len(values) != upper + dim:
        raise ValueError(f"linear_stats holds {len(values)} values, expected {upper + dim}")
    gram[_UPPER] = values[:upper]
    gram = gram + np.triu(gram, 1).T
    return gram, values[upper:].copy()
