"""Full-ranking evaluation: Recall, NDCG, HitRate at K and catalogue coverage."""

from __future__ import annotations

from collections.abc import Callable, Mapping

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
    k = min(k, scores.shape[1])  # fewer items than k (a few held-out cold items): all of them
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
    ranked: dict[int, np.ndarray] = {}
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        top = top_k(score_fn(chunk), seen, chunk, max(ks))
        ranked.update(zip(chunk.tolist(), top, strict=True))
    return ranked_metrics(ranked, truth, n_items, ks)


def ranked_metrics(
    ranked: Mapping[int, np.ndarray | list[int]],
    truth: dict[int, set[int]],
    n_items: int,
    ks: tuple[int, ...] = KS,
) -> dict[str, float]:
    """Recall, NDCG, HitRate at each k and coverage (distinct items shown at k over
    ``n_items``) of ranked lists (user -> item indices, best first; a list may be shorter than
    k; an index outside the items is never relevant), averaged over every user in ``truth``
    (a user without a list counts as a miss)."""
    kmax = max(ks)
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg", "hit")}
    shown: dict[int, set[int]] = {k: set() for k in ks}
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2))
    for u, relevant in truth.items():
        row = [int(i) for i in ranked.get(u, [])][:kmax]
        hits = np.zeros(kmax, dtype=bool)
        hits[: len(row)] = [i in relevant for i in row]
        for k in ks:
            h = hits[:k]
            sums[f"recall@{k}"] += h.sum() / len(relevant)
            sums[f"hit@{k}"] += float(h.any())
            ideal = discounts[: min(len(relevant), k)].sum()
            sums[f"ndcg@{k}"] += float((discounts[:k] * h).sum() / ideal)
            shown[k].update(i for i in row[:k] if 0 <= i < n_items)
    out = {key: round(v / max(len(truth), 1), 5) for key, v in sums.items()}
    for k in ks:
        out[f"coverage@{k}"] = round(len(shown[k]) / n_items, 5)
    out["users"] = len(truth)
    return out
