"""Feature views: one per entity and topic, fields as named in core.names."""

from datetime import timedelta

import pyarrow as pa
from entities import item, user
from feast import FeatureView, Field
from feast.types import Array, Float64, Int64, String
from sources import (
    item_feedback_push,
    item_stats_push,
    user_behavior_push,
    user_interest_push,
)

from core import names as n
from core.schema import feature_type

_FEAST_TYPES = {pa.string(): String, pa.float64(): Float64, pa.int64(): Int64}


def _dtype(arrow: pa.DataType):
    """Feast type of an Arrow type from core.schema's one feature-type table."""
    if pa.types.is_list(arrow):
        return Array(_FEAST_TYPES[arrow.value_type])
    return _FEAST_TYPES[arrow]


def _fields(features: list[str]) -> list[Field]:
    return [Field(name=f, dtype=_dtype(feature_type(f))) for f in features]


def _view(name: str, entity, source, description: str) -> FeatureView:
    # ttl=0: no look-back limit. Windowed counts are computed at read time from count_buckets
    # (core.windows; README, "Features").
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
    "Per-user behaviour: age buckets of recent events (-> 1h/24h/7d counts at read time).",
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
    "Per-item popularity: age buckets (-> 24h/7d/30d counts, conversion, CTR at read time).",
)
item_feedback = _view(
    n.ITEM_FEEDBACK,
    item,
    item_feedback_push,
    "Per-item impressions weighted by how likely their slot is looked at, and clicks, both "
    "decayed: what the explore policy learns from (API impressions and attributed clicks).",
)
