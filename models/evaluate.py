"""Full-ranking evaluation: Recall, NDCG, HitRate at K and catalogue coverage."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

KS = (10, 20)
ScoreFn = Callable[[np.ndarray], np.ndarray]  # user indices [B] -> scores [B, n_items]


def top_k(scores: np.ndarray, seen: sp.csr_matrix, users: np.ndarray, k: int) -> np.ndarray:
    """Top-k item indices per row of ``scores`` [B, I], already-seen items excluded."""
    scores = torch.tensor(np.asarray(scores, dtype=np.float32))  # a writable copy
    rows = seen[users]
    r, c = rows.nonzero()
    scores[torch.as_tensor(r), torch.as_tensor(c)] = -torch.inf
    return torch.topk(scores, k, dim=1).indices.numpy()


def evaluate(
    score_fn: ScoreFn,
    truth: dict[int, set[int]],
    seen: sp.csr_matrix,
    n_items: int,
    ks: tuple[int, ...] = KS,
    batch: int = 1024,
) -> dict[str, float]:
    """Mean metrics over every user in ``truth`` (full ranking over all ``n_items``)."""
    users = np.fromiter(truth, dtype=np.int64)
    kmax = max(ks)
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg", "hit")}
    shown: dict[int, set[int]] = {k: set() for k in ks}
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2))
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        ranked = top_k(score_fn(chunk), seen, chunk, kmax)
        for u, row in zip(chunk, ranked, strict=True):
            relevant = truth[int(u)]
            hits = np.fromiter((i in relevant for i in row), dtype=bool, count=kmax)
            for k in ks:
                h = hits[:k]
                sums[f"recall@{k}"] += h.sum() / len(relevant)
                sums[f"hit@{k}"] += float(h.any())
                ideal = discounts[: min(len(relevant), k)].sum()
                sums[f"ndcg@{k}"] += float((discounts[:k] * h).sum() / ideal)
                shown[k].update(row[:k].tolist())
    out = {key: round(v / max(len(users), 1), 5) for key, v in sums.items()}
    for k in ks:
        out[f"coverage@{k}"] = round(len(shown[k]) / n_items, 5)
    out["users"] = len(users)
    return out
