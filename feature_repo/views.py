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
        if feature == n.CONVERSION_7D:
            return Float64
        return Int64

    return [Field(name=f, dtype=dtype(f)) for f in features]


# ttl=0: no look-back limit. Counts are as of the entity's last event (see README, "Features").
user_behavior = FeatureView(
    name=n.USER_BEHAVIOR,
    entities=[user],
    ttl=timedelta(0),
    schema=_fields(n.USER_BEHAVIOR_FEATURES),
    source=user_behavior_push,
    online=True,
    description="Per-user counts of each behaviour over trailing 1h/24h/7d windows.",
)
user_interest = FeatureView(
    name=n.USER_INTEREST,
    entities=[user],
    ttl=timedelta(0),
    schema=_fields(n.USER_INTEREST_FEATURES),
    source=user_interest_push,
    online=True,
    description="Per-user category affinity (exponential time decay) and last N items.",
)
item_stats = FeatureView(
    name=n.ITEM_STATS,
    entities=[item],
    ttl=timedelta(0),
    schema=_fields(n.ITEM_STATS_FEATURES),
    source=item_stats_push,
    online=True,
    description="Per-item popularity over 24h/7d/30d and 7-day purchase/view conversion.",
)
