"""Explore/exploit: Thompson sampling over per-item impressions and clicks, and its offline replay.

The policy keeps the top of the ranking (exploit) and fills a bounded share of the slots with the
candidates whose sampled click-through rate, Beta(1 + clicks, 1 + impressions - clicks), is
highest (explore). The share adapts per user: thin histories explore more, rich ones less.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ExploreConfig:
    max_share: float = 0.3  # never more than this share of a response is exploration
    min_share: float = 0.05
    half_history: float = 20.0  # a user with this many events gets the mid-point share
    epsilon: float = 0.1  # the epsilon-greedy baseline's per-slot exploration probability


def explore_share(history_len: float, cfg: ExploreConfig) -> float:
    """Share of slots open to exploration for a user with ``history_len`` events."""
    h = max(float(history_len), 0.0)
    return cfg.min_share + (cfg.max_share - cfg.min_share) * cfg.half_history / (
        cfg.half_history + h
    )


def explore_slots(k: int, share: float, cfg: ExploreConfig) -> int:
    """Slots (of ``k``) the policy may fill: ``share`` bounded by ``max_share``."""
    return int(np.floor(k * min(max(share, 0.0), cfg.max_share) + 1e-9))


def thompson_sample(
    impressions: np.ndarray, clicks: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One draw per item [N] from Beta(1 + clicks, 1 + impressions - clicks)."""
    imp = np.nan_to_num(np.asarray(impressions, dtype=np.float64))
    clk = np.clip(np.nan_to_num(np.asarray(clicks, dtype=np.float64)), 0, None)
    return rng.beta(1.0 + clk, 1.0 + np.clip(imp - clk, 0, None))


def blend(
    ranked: np.ndarray,
    impressions: np.ndarray,
    clicks: np.ndarray,
    k: int,
    n_explore: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Order candidates [N] (given best-score first) for a ``k``-slot response.

    The first ``k - n_explore`` by score stay; ``n_explore`` of the rest, chosen by Thompson
    sampling, are spread evenly through the first ``k`` slots; the remainder follows in score
    order (for later filtering). ``impressions``/``clicks`` align with ``ranked``.
    Returns (order [N] of indices into ``ranked``, explored [N] bool).
    """
    n = len(ranked)
    n_explore = max(0, min(n_explore, k))
    keep = min(k - n_explore, n)
    n_explore = min(n_explore, n - keep)
    rest = np.arange(keep, n)
    picks = np.zeros(0, dtype=np.int64)
    if n_explore:
        theta = thompson_sample(impressions[rest], clicks[rest], rng)
        picks = rest[np.argsort(-theta, kind="stable")[:n_explore]]
    head = list(range(keep))
    slots = np.linspace(0, keep + n_explore, n_explore + 2)[1:-1].round().astype(int)
    for slot, pick in zip(slots, picks, strict=True):
        head.insert(int(slot), int(pick))
    tail = np.setdiff1d(rest, picks, assume_unique=True)
    order = np.concatenate([np.array(head, dtype=np.int64), tail])
    return order, np.isin(order, picks)


# -- offline replay ------------------------------------------------------------------------


def replay(
    rounds: list[tuple[np.ndarray, set[int], int]],
    n_items: int,
    k: int,
    cfg: ExploreConfig,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Simulate greedy, epsilon-greedy and Thompson sampling on held-out interactions.

    Each round is (candidates best-score first [N], items the user went on to interact with,
    the user's history length). A policy shows ``k`` of the candidates; every shown item is an
    impression, every shown item in the held-out set a click (the reward). The per-item counts
    feed the next rounds, as the stream feeds the API. Returns per policy the cumulative reward,
    reward per round, and catalogue coverage (distinct items shown / catalogue size).
    """
    out: dict[str, dict[str, float]] = {}
    for policy in ("greedy", "epsilon_greedy", "thompson"):
        rng = np.random.default_rng(seed)
        imp = np.zeros(n_items)
        clk = np.zeros(n_items)
        shown: set[int] = set()
        reward = 0.0
        for cands, truth, history_len in rounds:
            if policy == "greedy":
                slate = cands[:k]
            elif policy == "epsilon_greedy":
                slate = _epsilon_greedy(cands, k, cfg.epsilon, rng)
            else:
                share = explore_share(history_len, cfg)
                order, _ = blend(
                    cands, imp[cands], clk[cands], k, explore_slots(k, share, cfg), rng
                )
                slate = cands[order[:k]]
            hits = np.array([i in truth for i in slate], dtype=bool)
            imp[slate] += 1
            clk[slate[hits]] += 1
            reward += float(hits.sum())
            shown.update(int(i) for i in slate)
        out[policy] = {
            "reward": reward,
            "reward_per_round": reward / max(len(rounds), 1),
            "coverage": len(shown) / n_items,
        }
    return out


def _epsilon_greedy(cands: np.ndarray, k: int, eps: float, rng: np.random.Generator) -> np.ndarray:
    """Each slot: with probability ``eps`` a random unused candidate, else the next best."""
    slate: list[int] = []
    used = np.zeros(len(cands), dtype=bool)
    best = 0
    for _ in range(min(k, len(cands))):
        if rng.random() < eps and (~used).sum() > 1:
            j = int(rng.choice(np.flatnonzero(~used)))
        else:
            while used[best]:
                best += 1
            j = best
        used[j] = True
        slate.append(int(cands[j]))
    return np.array(slate, dtype=np.int64)
