"""Online features for a request: the user's context (profile_v1) and the candidates' item
features (ranker_v1's item side), with windowed counts computed at read time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import redis

from api.bundle import Bundle
from core import names as n
from core.feedback import decode_linear
from core.windows import add_read_time_columns

if TYPE_CHECKING:
    from api.state import State

# Errors that mean "the online store is unreachable", not "the request is wrong".
STORE_DOWN = (redis.RedisError, ConnectionError, TimeoutError, OSError)
EVENTS_TOTAL = n.full_name(n.USER_BEHAVIOR, n.EVENTS_TOTAL)
RECENT_ITEMS = n.full_name(n.USER_INTEREST, n.RECENT_ITEMS)
TOP_CATEGORIES = n.full_name(n.USER_INTEREST, n.TOP_CATEGORIES)
TOP_CATEGORY_SCORES = n.full_name(n.USER_INTEREST, n.TOP_CATEGORY_SCORES)
EXAMINED = n.full_name(n.ITEM_FEEDBACK, n.EXAMINED)
CLICKED = n.full_name(n.ITEM_FEEDBACK, n.CLICKED)
FEEDBACK_AS_OF = n.full_name(n.ITEM_FEEDBACK, n.FEEDBACK_AS_OF)
LINEAR_STATS = n.full_name(n.ITEM_FEEDBACK, n.LINEAR_STATS)


@dataclass
class Context:
    """What the stream knows about the user now (FeatureService profile_v1: every user-side
    feature of ranker_v1 too)."""

    features: dict[str, Any] = field(default_factory=dict)  # view__feature -> value

    @property
    def events_total(self) -> int:
        return int(self.features.get(EVENTS_TOTAL) or 0)

    @property
    def top_categories(self) -> list[str]:
        return list(self.features.get(TOP_CATEGORIES) or [])

    @property
    def recent_items(self) -> list[str]:
        return list(self.features.get(RECENT_ITEMS) or [])


def read_context(state: State, user_id: str) -> Context:
    """One read of the user's profile; windowed counts as of the state's clock (now)."""
    online = state.features.user(user_id)
    add_read_time_columns(online, state.clock_us())
    return Context({k: v[0] for k, v in online.items() if k != n.USER_ID})


def live_vector(state: State, bundle: Bundle, user_id: str, ctx: Context) -> np.ndarray | None:
    """The user's vector now: trained embedding moved by the recent items in ``ctx``."""
    return bundle.user_vector(user_id, ctx.recent_items, state.settings.live_interest_weight)


def hydrate(state: State, item_ids: list[str]) -> dict[str, list[Any]]:
    """The item side of ranker_v1 for every candidate: ONE batched Feast online read for the
    items not read in the last ``IG_ITEM_FEATURE_TTL_S`` seconds (the rest come from the
    in-process cache). The user side is the context read: the same user for every row.
    Windowed counts are computed from the stored buckets when read, and cached with them
    (they move in 5-minute steps at the finest; the cache holds them for about a second)."""
    cache = state.item_cache
    found = cache.get_many(item_ids)
    missing = [i for i, f in zip(item_ids, found, strict=True) if f is None]
    if missing:
        online = state.features.items(missing)
        add_read_time_columns(online, state.clock_us())
        fresh = [
            dict(zip(online, values, strict=True)) for values in zip(*online.values(), strict=True)
        ]
        cache.put_many(missing, fresh)
        got = dict(zip(missing, fresh, strict=True))
        found = [f if f is not None else got[i] for i, f in zip(item_ids, found, strict=True)]
    return {col: [f[col] for f in found] for col in (found[0] if found else {})}  # type: ignore[union-attr]


def _decay(features: dict[str, list[Any]], size: int, half_life_s: float) -> np.ndarray:
    """Per candidate [size]: how much of its item_feedback is left now (0 without any)."""
    as_of = column(features, FEEDBACK_AS_OF, size)
    age = np.clip(time.time() - as_of, 0, None)
    return np.where(as_of > 0, 0.5 ** (age / half_life_s), 0.0)


def feedback_now(
    features: dict[str, list[Any]], size: int, half_life_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates' (examined, clicked) [size] from item_feedback, decayed from the time
    they were written to now (both halve every ``half_life_s``); zeros without feedback."""
    examined, clicked = column(features, EXAMINED, size), column(features, CLICKED, size)
    factor = _decay(features, size, half_life_s)
    return examined * factor, clicked * factor


def linear_now(
    features: dict[str, list[Any]], size: int, half_life_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates' contextual sums, decayed to now: (gram [size, D, D], clicks [size, D])."""
    stored = features.get(LINEAR_STATS, [None] * size)
    pairs = [decode_linear(text) for text in stored]
    factor = _decay(features, size, half_life_s)
    gram = np.stack([g for g, _ in pairs]) * factor[:, None, None]
    return gram, np.stack([c for _, c in pairs]) * factor[:, None]


def column(features: dict[str, list[Any]], col: str, size: int) -> np.ndarray:
    """One feature column as floats [size] (missing column or value: 0)."""
    if col not in features:
        return np.zeros(size)
    return np.array([0.0 if v is None else v for v in features[col]], dtype=np.float64)
