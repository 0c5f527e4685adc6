"""An in-process cache of items' online features (``IG_ITEM_FEATURE_TTL_S``)."""

from __future__ import annotations

import time
from typing import Any


class ItemFeatureCache:
    """Item features by item id for ``ttl_s`` seconds (0: off). Item counts move slowly next to
    request rates, so popular candidates are read from Redis about once per ``ttl_s``."""

    def __init__(self, ttl_s: float, max_items: int = 200_000) -> None:
        self.ttl_s, self.max_items = ttl_s, max_items
        self._features: dict[str, tuple[float, dict[str, Any]]] = {}

    def get_many(self, item_ids: list[str]) -> list[dict[str, Any] | None]:
        if self.ttl_s <= 0:
            return [None] * len(item_ids)
        now = time.monotonic()
        out: list[dict[str, Any] | None] = []
        for i in item_ids:
            hit = self._features.get(i)
            out.append(hit[1] if hit is not None and now - hit[0] < self.ttl_s else None)
        return out

    def put_many(self, item_ids: list[str], features: list[dict[str, Any]]) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._features) + len(item_ids) > self.max_items:
            self._features.clear()  # bounded memory; the next reads refill it
        now = time.monotonic()
        self._features.update({i: (now, f) for i, f in zip(item_ids, features, strict=True)})
