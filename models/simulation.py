"""A simulated shop for ``ig simulate``: the hidden click model of real shoppers, and the
bookkeeping of a closed feedback loop (clicks, expected clicks, regret, discovery).

Shoppers are trained users of a real log with purchases in its held-out (test) period. What
they would click is hidden from the recommender and fixed by those purchases (``ShopConfig``):

- an item the shopper bought in the held-out period: high appeal;
- an item of a category they bought in the held-out period: medium appeal;
- anything else: low appeal;
- a "new item" (one the model never trained on, placed by its text): high appeal for every
  shopper (``ShopConfig.new_item_for_all``, a new hit), or only for shoppers with its category
  among their held-out categories.

A shown item at slot ``p`` (0 = first) is clicked with probability ``examination(p) *
appeal``, the position-based model the stream uses to weight impressions
(:func:`stream.steps.examination`). A clicked item is spent: its appeal for that shopper falls
to the low level (the API stops showing what a shopper just touched, too).

Regret of one answer: the expected clicks of the best possible ``k``-slate for that shopper (the
``k`` most appealing items they can be shown, best first) minus the expected clicks of the
slate shown. Clicks are drawn from uniforms keyed by (seed, round, shopper), so every policy
meets the same shoppers with the same luck (common random numbers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core import names as n
from stream.steps import examination


@dataclass(frozen=True)
class ShopConfig:
    """The hidden click model's appeal levels (click probability at the first slot)."""

    bought_appeal: float = 0.5  # an item the shopper bought in the held-out period
    category_appeal: float = 0.05  # an item of one of their held-out categories
    base_appeal: float = 0.005  # anything else (and an item they already clicked)
    new_item_appeal: float = 0.3  # the new item, for its audience:
    new_item_for_all: bool = True  # every shopper (a new hit), else shoppers of its category
    position_bias_eta: float = 1.0  # examination (1 + p) ** -eta, as stream.steps


@dataclass(frozen=True)
class Shopper:
    """A trained user and what the held-out period says they want."""

    user_id: str
    bought: frozenset[str]  # items bought in the held-out period
    categories: frozenset[str]  # their categories


def held_out_shoppers(
    test: pd.DataFrame,
    users: Iterable[str],
    item_category: Mapping[str, str | None],
    excluded: Mapping[str, set[str]] | None = None,
) -> list[Shopper]:
    """Trained ``users`` with held-out interactions (``test``: canonical events) of catalogue
    items they can still be shown (not in ``excluded[user]``, e.g. bought in training), in
    user-id order."""
    known = set(users)
    test = test[test[n.USER_ID].isin(known) & test[n.ITEM_ID].isin(item_category.keys())]
    out = []
    for user, items in test.groupby(n.USER_ID)[n.ITEM_ID]:
        bought = frozenset(str(i) for i in items)
        if not bought - (excluded or {}).get(str(user), set()):
            continue
        cats = frozenset(c for i in bought if (c := item_category.get(i)))
        out.append(Shopper(str(user), bought, cats))
    return sorted(out, key=lambda s: s.user_id)


def audience(category: str | None, shoppers: Sequence[Shopper], cfg: ShopConfig) -> set[str]:
    """The shoppers (ids) a new item of ``category`` appeals to."""
    if cfg.new_item_for_all:
        return {s.user_id for s in shoppers}
    return {s.user_id for s in shoppers if category and category in s.categories}


def pick_new_item(
    cold_items: Sequence[str],
    item_category: Mapping[str, str | None],
    shoppers: Sequence[Shopper],
    cfg: ShopConfig,
    reach: Mapping[str, set[str]] | None = None,
) -> str | None:
    """The cold item with the largest audience the recommender can reach: ``reach`` maps an
    item to the shoppers it can be a candidate for (policies only choose among candidates);
    then the largest audience; ties by item id. None without cold items."""
    best: tuple[int, int, str] | None = None
    for item in sorted(cold_items):
        fans = audience(item_category.get(item), shoppers, cfg)
        reached = len(fans & reach.get(item, set())) if reach is not None else 0
        key = (reached, len(fans), item)
        if best is None or key[:2] > best[:2]:
            best = key
    return None if best is None else best[2]


def slot_examination(k: int, eta: float) -> np.ndarray:
    """[k] examination of slots 0..k-1."""
    return np.array([examination(p, eta) for p in range(k)], dtype=np.float64)


class Shop:
    """The hidden side of the simulation: appeal per (shopper, item), clicks, the oracle.

    ``catalogue``: every item id the recommender can show; ``categories`` their categories;
    ``excluded``: per user, items the recommender never shows them (bought in training);
    ``new_item``: an item with ``new_item_appeal`` for its audience (:func:`audience`).
    """

    def __init__(
        self,
        shoppers: Sequence[Shopper],
        catalogue: Sequence[str],
        categories: Sequence[str | None],
        cfg: ShopConfig,
        excluded: Mapping[str, set[str]] | None = None,
        new_item: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.shoppers = {s.user_id: s for s in shoppers}
        self.ids = [str(i) for i in catalogue]
        self.index = {item: ix for ix, item in enumerate(self.ids)}
        self.categories = np.array([c or "" for c in categories], dtype=object)
        self.excluded = {u: set(items) for u, items in (excluded or {}).items()}
        self.new_item = new_item
        self.spent: dict[str, set[str]] = {}
        cat = self.categories[self.index[new_item]] if new_item in self.index else None
        shoppers = list(self.shoppers.values())
        self.audience = audience(cat, shoppers, cfg) if new_item else set()

    def wants_new_item(self, user_id: str) -> bool:
        return user_id in self.audience

    def appeal(self, user_id: str, items: Sequence[str]) -> np.ndarray:
        """[len(items)] click probability of each item at the first slot, for ``user_id``."""
        s, cfg = self.shoppers[user_id], self.cfg
        spent = self.spent.get(user_id, set())
        new = self.wants_new_item(user_id)
        out = np.full(len(items), cfg.base_appeal)
        for j, item in enumerate(items):
            if item in spent:
                continue
            ix = self.index.get(item)
            cat = self.categories[ix] if ix is not None else ""
            level = cfg.base_appeal
            if cat and cat in s.categories:
                level = cfg.category_appeal
            if new and item == self.new_item:
                level = max(level, cfg.new_item_appeal)
            if item in s.bought:
                level = max(level, cfg.bought_appeal)
            out[j] = level
        return out

    def click_probs(self, user_id: str, items: Sequence[str]) -> np.ndarray:
        """[len(items)] click probability of a slate shown in this order."""
        return slot_examination(len(items), self.cfg.position_bias_eta) * self.appeal(
            user_id, items
        )

    def expected_clicks(self, user_id: str, items: Sequence[str]) -> float:
        return float(self.click_probs(user_id, items).sum())

    def catalogue_appeal(self, user_id: str) -> np.ndarray:
        """[C] appeal of every catalogue item; -inf where it can never be shown to them."""
        s, cfg = self.shoppers[user_id], self.cfg
        out = np.where(
            np.isin(self.categories, list(s.categories)), cfg.category_appeal, cfg.base_appeal
        ).astype(np.float64)
        if self.new_item in self.index and self.wants_new_item(user_id):
            ix = self.index[self.new_item]  # type: ignore[index]
            out[ix] = max(out[ix], cfg.new_item_appeal)
        for item in s.bought:
            if item in self.index:
                out[self.index[item]] = cfg.bought_appeal
        for item in self.spent.get(user_id, ()):
            if item in self.index:
                out[self.index[item]] = cfg.base_appeal
        for item in self.excluded.get(user_id, ()):
            if item in self.index:
                out[self.index[item]] = -np.inf
        return out

    def best_expected(self, user_id: str, k: int) -> float:
        """Expected clicks of the best ``k``-slate: the most appealing items, best first."""
        appeal = self.catalogue_appeal(user_id)
        appeal = appeal[np.isfinite(appeal)]
        top = np.sort(appeal)[::-1][:k]
        return float((slot_examination(len(top), self.cfg.position_bias_eta) * top).sum())

    def clicks(self, user_id: str, items: Sequence[str], uniforms: np.ndarray) -> np.ndarray:
        """[len(items)] bool: which shown items are clicked, given ``uniforms`` [>= len(items)]
        in [0, 1). Clicked items are spent (their appeal falls to the base level)."""
        clicked = uniforms[: len(items)] < self.click_probs(user_id, items)
        self.spent.setdefault(user_id, set()).update(
            item for item, c in zip(items, clicked.tolist(), strict=True) if c
        )
        return clicked


def click_uniforms(seed: int, round_no: int, shopper_no: int, k: int) -> np.ndarray:
    """[k] uniforms for one answer: the same for every policy (common random numbers)."""
    return np.random.default_rng([seed, round_no, shopper_no]).random(k)


def schedule(n_shoppers: int, rounds: int, per_round: int, seed: int) -> list[np.ndarray]:
    """Per round, the shoppers (indices) who visit: ``per_round`` distinct ones, drawn anew
    each round (so shoppers come back), the same for every policy."""
    rng = np.random.default_rng(seed)
    size = min(per_round, n_shoppers)
    return [rng.choice(n_shoppers, size=size, replace=False) for _ in range(rounds)]


@dataclass
class Trace:
    """One policy's run, round by round."""

    policy: str
    clicks: list[int] = field(default_factory=list)
    expected: list[float] = field(default_factory=list)
    best: list[float] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    shown: list[int] = field(default_factory=list)
    explored: list[int] = field(default_factory=list)
    new_item_shown_at: int | None = None  # first round (1-based) the new item was shown
    new_item_clicked_at: int | None = None  # first round it was clicked: its discovery

    def record(
        self,
        round_no: int,
        answers: Sequence[tuple[Sequence[str], np.ndarray, float, float, int]],
        new_item: str | None,
    ) -> None:
        """One round (1-based): per answer (items shown, clicked [bool], expected clicks,
        best expected clicks, slots explored)."""
        self.clicks.append(int(sum(int(c.sum()) for _, c, _, _, _ in answers)))
        self.expected.append(float(sum(e for _, _, e, _, _ in answers)))
        self.best.append(float(sum(b for _, _, _, b, _ in answers)))
        self.answers.append(len(answers))
        self.shown.append(sum(len(items) for items, _, _, _, _ in answers))
        self.explored.append(sum(x for _, _, _, _, x in answers))
        if new_item is None:
            return
        for items, clicked, _, _, _ in answers:
            if new_item in items:
                if self.new_item_shown_at is None:
                    self.new_item_shown_at = round_no
                j = list(items).index(new_item)
                if clicked[j] and self.new_item_clicked_at is None:
                    self.new_item_clicked_at = round_no

    @property
    def regret(self) -> list[float]:
        return [b - e for b, e in zip(self.best, self.expected, strict=True)]

    def summary(self) -> dict[str, Any]:
        regret = self.regret
        return {
            "policy": self.policy,
            "rounds": len(self.clicks),
            "answers": int(sum(self.answers)),
            "impressions": int(sum(self.shown)),
            "clicks": int(sum(self.clicks)),
            "expected_clicks": round(float(sum(self.expected)), 4),
            "best_expected_clicks": round(float(sum(self.best)), 4),
            "regret": round(float(sum(regret)), 4),
            "explored_share": round(sum(self.explored) / max(sum(self.shown), 1), 4),
            "clicks_per_round": self.clicks,
            "cumulative_clicks": np.cumsum(self.clicks).astype(int).tolist(),
            "cumulative_expected_clicks": np.round(np.cumsum(self.expected), 4).tolist(),
            "cumulative_regret": np.round(np.cumsum(regret), 4).tolist(),
            "new_item_first_shown_round": self.new_item_shown_at,
            "rounds_to_discovery": self.new_item_clicked_at,
        }
