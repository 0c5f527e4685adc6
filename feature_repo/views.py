"""Feature views: one per entity and topic, fields as named in core.names."""

from datetime import timedelta

from entities import item, user
from feast import FeatureView, Field
from feast.types import Array, Float64, Int64, String
from sources import item_stats_push, user_behavior_push, user_interest_push

from core import names as n


def _fields(features: list[str]) -> list[Field]:
    def dtype(feature: str):
        if feature in (n.TOP_CATEGORIES, n.RECENT_ITEMS):
            return Array(String)
        if feature == n.TOP_CATEGORY_SCORES:
            return Array(Float64)
        if feature in (n.CONVERSION_7D, n.CTR_7D):
            return Float64
        return Int64

    return [Field(name=f, dtype=dtype(f)) for f in features]


def _view(name: str, entity, source, description: str) -> FeatureView:
    # ttl=0: no look-back limit. Counts are as of the entity's last event (README, "Features").
    return FeatureView(
        name=name,
        entities=[entity],
        ttl=timedelta(0),
        schema=_fields(n.VIEW_FEATURES[name]),
        source=source,
        online=True,
        description=description,
    )


user_behavior = _view(
    n.USER_BEHAVIOR,
    user,
    user_behavior_push,
    "Per-user counts of each behaviour over trailing 1h/24h/7d windows.",
)
user_interest = _view(
    n.USER_INTEREST,
    user,
    user_interest_push,
    "Per-user category affinity (exponential time decay) and last N items.",
)
item_stats = _view(
    n.ITEM_STATS,
    item,
    item_stats_push,
    "Per-item popularity over 24h/7d/30d and 7-day purchase/view conversion.",
)
