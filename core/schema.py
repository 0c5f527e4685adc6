"""The canonical schema (events, items, users) and the Arrow schemas of feature rows."""

from __future__ import annotations

import pyarrow as pa

from core import names as n

TS_TYPE = pa.timestamp("us", tz="UTC")

EVENTS_SCHEMA = pa.schema(
    [
        pa.field(n.USER_ID, pa.string(), nullable=False),
        pa.field(n.ITEM_ID, pa.string(), nullable=False),
        pa.field(n.EVENT_TYPE, pa.string(), nullable=False),
        pa.field(n.EVENT_TIMESTAMP, TS_TYPE, nullable=False),
        pa.field(n.VALUE, pa.float64(), nullable=False),
        pa.field(n.SESSION_ID, pa.string()),
        pa.field(n.CATEGORY_ID, pa.string()),
    ]
)
REQUIRED_EVENT_COLUMNS = (n.USER_ID, n.ITEM_ID, n.EVENT_TYPE, n.EVENT_TIMESTAMP)

ITEMS_SCHEMA = pa.schema(
    [
        pa.field(n.ITEM_ID, pa.string(), nullable=False),
        pa.field(n.TITLE, pa.string()),
        pa.field(n.CATEGORY, pa.string()),
        pa.field(n.CATEGORY_DERIVED, pa.bool_()),
        pa.field(n.BRAND, pa.string()),
    ]
)

# Users: user_id plus whatever attributes a dataset knows (kept as strings).
USERS_KEY = n.USER_ID

REJECTED_SCHEMA = pa.schema(
    [
        pa.field("source_row", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("raw", pa.string()),
    ]
)


# The one feature-type table: the offline rows (Arrow, below) and the Feast views
# (feature_repo/views.py) both read it. Stored features not named here are int64.
FEATURE_TYPES: dict[str, pa.DataType] = {
    n.TOP_CATEGORIES: pa.list_(pa.string()),
    n.RECENT_ITEMS: pa.list_(pa.string()),
    n.TOP_CATEGORY_SCORES: pa.list_(pa.float64()),
    n.COUNT_BUCKETS: pa.string(),  # core.windows: text, for Dask's sake
    n.EXAMINED: pa.float64(),
    n.CLICKED: pa.float64(),
    n.LINEAR_STATS: pa.string(),  # core.feedback: text, like count_buckets
}


def feature_type(feature: str) -> pa.DataType:
    """Arrow type of a stored feature."""
    return FEATURE_TYPES.get(feature, pa.int64())


def feature_row_schema(view: str) -> pa.Schema:
    """Arrow schema of the offline rows of one feature view (the dataflow writes exactly this)."""
    return pa.schema(
        [
            pa.field(n.VIEW_ENTITY_KEY[view], pa.string(), nullable=False),
            pa.field(n.EVENT_TIMESTAMP, TS_TYPE, nullable=False),
            pa.field(n.CREATED_TIMESTAMP, TS_TYPE, nullable=False),
            *(pa.field(f, feature_type(f)) for f in n.VIEW_FEATURES[view]),
        ]
    )
