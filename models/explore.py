"""Explore/exploit policies with exact propensities, and their offline replay.

A response of ``k`` slots keeps the top of the ranking (exploit) and gives a bounded share of
the slots to exploration. The share adapts per user: thin histories explore more, rich ones
less. Policies, under the same budget (the share):

- ``greedy``: the first ``k`` by score, nothing explored;
- ``epsilon_greedy``: each slot, with probability *share*, a uniformly drawn unused candidate,
  else the best unused one;
- ``thompson``: the first ``k - n`` by score stay; ``n`` slots (spread through the list) get
  candidates drawn by Thompson sampling over each item's Beta(1 + clicks, 1 + examined -
  clicks) posterior (the stream's item_feedback);
- ``contextual``: the same slots, drawn by linear Thompson sampling (Agrawal & Goyal, ICML
  2013), one model per item over the request's context (:func:`context_vectors`: history
  length, whether the item is in one of the shopper's top categories, hour of day, device): each
  item's click model ``x . theta`` has the posterior N(A^-1 b, v^2 A^-1), A = lambda I + the
  examination-weighted sum of its impressions' x x^T, b the sum of its clicks' x (the stream
  keeps both in item_feedback, decayed like the counts).

Every slot carries its **propensity**: the exact probability with which the policy put that
item there, given the slots it had filled before. For Thompson sampling that probability has no
closed form, so the policy estimates each candidate's chance of winning a draw (``draws``
Monte Carlo draws, mixed with a uniform floor so that every candidate keeps some chance) and
then *samples from that estimate*: the probability it samples from is known exactly, and that
is what it logs. Off-policy estimators (models.ope) divide by it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.names import CONTEXT_DIM

GREEDY, EPSILON_GREEDY, THOMPSON, CONTEXTUAL = "greedy", "epsilon_greedy", "thompson", "contextual"
POLICIES = (GREEDY, EPSILON_GREEDY, THOMPSON, CONTEXTUAL)
DEVICES = ("desktop", "mobile", "tablet")


@dataclass(frozen=True)
class ExploreConfig:
    max_share: float = 0.3  # never more than this share of a response is exploration
    min_share: float = 0.05
    half_history: float = 20.0  # a user with this many events gets the mid-point share
    draws: int = 128  # Monte Carlo draws that estimate Thompson sampling's choice probabilities
    floor: float = 0.05  # share of an explore draw spread uniformly (every candidate possible)
    ridge: float = 1.0  # lambda: the contextual policy's prior precision
    noise: float = 0.25  # v: the contextual policy's posterior scale


@dataclass(frozen=True)
class Slate:
    """What a policy chose, slot by slot: ``order`` [k] indices into the candidates (given best
    score first), ``explored`` [k] placed by exploration, ``propensity`` [k] the probability of
    that choice given the earlier slots (1.0 for a slot no chance decided)."""

    order: np.ndarray
    explored: np.ndarray
    propensity: np.ndarray


def explore_share(history_len: float, cfg: ExploreConfig) -> float:
    """Share of slots open to exploration for a user with ``history_len`` events."""
    h = max(float(history_len), 0.0)
    return cfg.min_share + (cfg.max_share - cfg.min_share) * cfg.half_history / (
        cfg.half_history + h
    )


def explore_slots(k: int, share: float, cfg: ExploreConfig) -> int:
    """Slots (of ``k``) the policy may fill: ``share`` bounded by ``max_share``."""
    return int(np.floor(k * min(max(share, 0.0), cfg.max_share) + 1e-9))


def beta_posterior(examined: np.ndarray, clicked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Beta(1 + clicks, 1 + examined - clicks) parameters [N] (missing values: no feedback)."""
    exa = np.clip(np.nan_to_num(np.asarray(examined, dtype=np.float64)), 0, None)
    clk = np.clip(np.nan_to_num(np.asarray(clicked, dtype=np.float64)), 0, None)
    return 1.0 + clk, 1.0 + np.clip(exa - clk, 0, None)


def choice_probs(draws: np.ndarray, floor: float) -> np.ndarray:
    """Draws [M, N] -> how often each of N candidates had the highest draw [N], mixed with a
    uniform ``floor`` (sums to 1)."""
    m, size = draws.shape
    wins = np.bincount(np.argmax(draws, axis=1), minlength=size) / m
    return (1.0 - floor) * wins + floor / size


def thompson_probs(
    alpha: np.ndarray, beta: np.ndarray, cfg: ExploreConfig, rng: np.random.Generator
) -> np.ndarray:
    """Thompson sampling's probability [N] of choosing each candidate (Monte Carlo + floor)."""
    return choice_probs(rng.beta(alpha, beta, size=(cfg.draws, len(alpha))), cfg.floor)


def context_vectors(
    history_len: float, top_match: np.ndarray, hour: float, device: str | None
) -> np.ndarray:
    """The contextual policy's features [N, CONTEXT_DIM] for N candidates of one request:
    1, log-scaled history length (1 at 1,000 events), the item is in one of the shopper's top
    categories (``top_match`` [N]), hour of day on the circle, a mobile or tablet device."""
    size = len(top_match)
    angle = 2 * np.pi * (hour % 24) / 24
    shared = [
        1.0,
        min(np.log1p(max(history_len, 0.0)) / np.log1p(1000.0), 1.0),
        0.0,
        np.sin(angle),
        np.cos(angle),
        float(device in ("mobile", "tablet")),
    ]
    x = np.tile(np.array(shared), (size, 1))
    x[:, 2] = np.asarray(top_match, dtype=np.float64)
    return x


def linear_probs(
    x: np.ndarray,
    gram: np.ndarray,
    clicks: np.ndarray,
    cfg: ExploreConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Linear Thompson sampling's probability [N] of choosing each candidate: x [N, D] their
    contexts, gram [N, D, D] the examination-weighted sum of x x^T of their impressions,
    clicks [N, D] the sum of x of their clicks. The draw of x . theta is N(x A^-1 b,
    v^2 x A^-1 x) with A = ridge I + gram."""
    size, dim = x.shape
    a = gram + cfg.ridge * np.eye(dim)
    solved = np.linalg.solve(a, np.stack([clicks, x], axis=-1))  # [N, D, 2]: A^-1 b, A^-1 x
    mean = np.einsum("nd,nd->n", x, solved[..., 0])
    std = cfg.noise * np.sqrt(np.clip(np.einsum("nd,nd->n", x, solved[..., 1]), 0, None))
    draws = mean + std * rng.standard_normal((cfg.draws, size))
    return choice_probs(draws, cfg.floor)


def greedy(n: int, k: int) -> Slate:
    take = min(n, k)
    return Slate(np.arange(take), np.zeros(take, bool), np.ones(take))


def epsilon_greedy(n: int, k: int, eps: float, rng: np.random.Generator) -> Slate:
    """Each slot: with probability ``eps`` a uniformly drawn unused candidate, else the best
    unused one. Propensity of slot j's item: (1 - eps) [it is the best unused] + eps / unused."""
    unused = np.ones(n, dtype=bool)
    order, explored, prop = [], [], []
    for _ in range(min(n, k)):
        free = np.flatnonzero(unused)
        best = int(free[0])
        roll = rng.random() < eps
        j = int(rng.choice(free)) if roll else best
        order.append(j)
        explored.append(roll)
        prop.append((1.0 - eps) * (j == best) + eps / len(free))
        unused[j] = False
    return Slate(np.array(order, np.int64), np.array(explored, bool), np.array(prop))


def _layout(n: int, k: int, n_explore: int) -> tuple[int, list[int]]:
    """Thompson sampling's slate shape: how many of the best candidates it keeps, and the slots
    (spread evenly through the list) its ``n_explore`` draws go to."""
    n_explore = max(0, min(n_explore, k))
    keep = min(k - n_explore, n)
    n_explore = min(n_explore, n - keep)
    if not n_explore:
        return keep, []
    return keep, np.linspace(0, keep + n_explore, n_explore + 2)[1:-1].round().astype(int).tolist()


def thompson(
    n: int,
    k: int,
    n_explore: int,
    probs_of: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
) -> Slate:
    """The first ``k - n_explore`` candidates by score stay; ``n_explore`` of the rest are drawn
    one after another from ``probs_of(rest)`` (renormalised over what is left) and spread
    evenly through the list. ``probs_of``: candidate indices [R] -> choice probabilities [R]."""
    keep, slots = _layout(n, k, n_explore)
    order = list(range(keep))
    explored = [False] * keep
    prop = [1.0] * keep
    if slots:
        rest = np.arange(keep, n)
        p = probs_of(rest)
        for slot in slots:
            j = int(rng.choice(len(rest), p=p / p.sum()))
            order.insert(slot, int(rest[j]))
            explored.insert(slot, True)
            prop.insert(slot, float(p[j] / p.sum()))
            p[j] = 0.0
    return Slate(np.array(order, np.int64), np.array(explored, bool), np.array(prop))


def _probs_of(
    policy: str,
    n: int,
    cfg: ExploreConfig,
    rng: np.random.Generator,
    feedback: tuple[np.ndarray, np.ndarray] | None,
    linear: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
) -> Callable[[np.ndarray], np.ndarray]:
    """Thompson sampling's or the contextual policy's choice probabilities over candidate
    indices [R] -> [R]."""
    if policy == CONTEXTUAL:
        if linear is None:
            raise ValueError("the contextual policy needs the candidates' contexts")
        x, gram, clicks = linear
        return lambda rest: linear_probs(x[rest], gram[rest], clicks[rest], cfg, rng)
    examined, clicked = feedback if feedback is not None else (np.zeros(n), np.zeros(n))
    alpha, beta = beta_posterior(examined, clicked)
    return lambda rest: thompson_probs(alpha[rest], beta[rest], cfg, rng)


def _check(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; one of {', '.join(POLICIES)}")


def choose(
    policy: str,
    n: int,
    k: int,
    share: float,
    cfg: ExploreConfig,
    rng: np.random.Generator,
    feedback: tuple[np.ndarray, np.ndarray] | None = None,
    linear: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Slate:
    """Run ``policy`` over ``n`` candidates given best score first; ``feedback``: their
    (examined, clicked) [n] for Thompson sampling (None: no feedback yet); ``linear``: their
    (contexts [n, D], gram [n, D, D], clicks [n, D]) for the contextual policy."""
    _check(policy)
    if policy == GREEDY or share <= 0:
        return greedy(n, k)
    if policy == EPSILON_GREEDY:
        return epsilon_greedy(n, k, min(share, cfg.max_share), rng)
    probs_of = _probs_of(policy, n, cfg, rng, feedback, linear)
    return thompson(n, k, explore_slots(k, share, cfg), probs_of, rng)


def slot_probs(
    policy: str,
    order: np.ndarray,
    n: int,
    k: int,
    share: float,
    cfg: ExploreConfig,
    rng: np.random.Generator,
    feedback: tuple[np.ndarray, np.ndarray] | None = None,
    linear: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The probability [len(order)] that ``policy`` would have put ``order[j]`` in slot ``j``
    given the slots before it as they were (the same conditional the served policy logs as its
    propensity), over the same ``n`` candidates best score first. For the policy that served,
    this is its logged propensity (Thompson sampling's up to its Monte Carlo estimate); for the
    others it is what off-policy evaluation divides by (models.ope.own_log_check)."""
    _check(policy)
    order = np.asarray(order, dtype=np.int64)
    used = np.zeros(n, dtype=bool)
    out = np.zeros(len(order))
    explore = policy != GREEDY and share > 0
    eps = min(share, cfg.max_share) if policy == EPSILON_GREEDY else 0.0
    keep, slots = _layout(n, k, explore_slots(k, share, cfg)) if explore and not eps else (k, [])
    rest = np.arange(keep, n)
    p = _probs_of(policy, n, cfg, rng, feedback, linear)(rest) if slots else np.zeros(0)
    for j, item in enumerate(order.tolist()):
        best = int(np.argmin(used)) if not used.all() else -1
        if j in slots:  # a Thompson draw over the unused rest
            live = np.where(used[keep:], 0.0, p)
            out[j] = live[item - keep] / live.sum() if item >= keep and live.sum() > 0 else 0.0
        elif eps:
            out[j] = (1.0 - eps) * (item == best) + eps / max(int((~used).sum()), 1)
        else:  # the next of the best (Thompson's kept slots; greedy's every slot)
            out[j] = float(item == best)
        used[item] = True
    return out


# -- offline replay ------------------------------------------------------------------------


def replay(
    rounds: list[tuple[np.ndarray, set[int], int]],
    n_items: int,
    k: int,
    cfg: ExploreConfig,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Simulate each policy on held-out interactions.

    Each round is (candidates best-score first [N], items the user went on to interact with,
    the user's history length). A policy shows ``k`` of the candidates; every shown item is an
    impression, every shown item in the held-out set a click (the reward). The per-item counts
    feed the next rounds, as the stream feeds the API. Returns per policy the cumulative reward,
    reward per round, and catalogue coverage (distinct items shown / catalogue size).
    """
    out: dict[str, dict[str, float]] = {}
    for policy in POLICIES:
        rng = np.random.default_rng(seed)
        shown_n, clicks = np.zeros(n_items), np.zeros(n_items)
        gram = np.zeros((n_items, CONTEXT_DIM, CONTEXT_DIM))
        clicks_x = np.zeros((n_items, CONTEXT_DIM))
        shown: set[int] = set()
        reward = 0.0
        for cands, truth, history_len in rounds:
            share = explore_share(history_len, cfg)
            x = context_vectors(history_len, np.zeros(len(cands)), 12.0, None)
            feedback = (shown_n[cands], clicks[cands])
            linear = (x, gram[cands], clicks_x[cands])
            chosen = choose(policy, len(cands), k, share, cfg, rng, feedback, linear).order
            slate = cands[chosen]
            hits = np.array([i in truth for i in slate], dtype=bool)
            shown_n[slate] += 1
            clicks[slate[hits]] += 1
            gram[slate] += np.einsum("nd,ne->nde", x[chosen], x[chosen])
            clicks_x[slate[hits]] += x[chosen][hits]
            reward += float(hits.sum())
            shown.update(int(i) for i in slate)
        out[policy] = {
            "reward": reward,
            "reward_per_round": reward / max(len(rounds), 1),
            "coverage": len(shown) / n_items,
        }
    return out
