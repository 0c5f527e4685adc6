"""Column, feature, view and service names: defined once, used by stream, Feast, models and API."""

from __future__ import annotations

from enum import StrEnum

# Canonical event columns.
USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT_TYPE = "event_type"
EVENT_TIMESTAMP = "event_timestamp"
VALUE = "value"
SESSION_ID = "session_id"
CATEGORY_ID = "category_id"
# What the API adds to the events it writes (impressions) and attributes (clicks): which
# answer (request_id), where in it (position, 0 = first), under which policy, and the exact
# probability with which that policy put the item there (propensity).
REQUEST_ID = "request_id"
POSITION = "position"
POLICY = "policy"
PROPENSITY = "propensity"
REQUEST_KEY = "ig:request:{}"  # Redis hash: an answer's slots by item (api.impressions)
PROPENSITIES = "propensities"  # {policy: probability of the slot under it}
EXPLORED = "explored"
CONTEXT = "context"  # the request's context features for that item (models.explore)
CONTEXT_DIM = 6  # their length: bias, history, top-category match, hour sin/cos, device
# Feature rows: a per-entity version that breaks ties between rows with the same event time.
CREATED_TIMESTAMP = "created_timestamp"

# Items and users tables.
TITLE = "title"
CATEGORY = "category"
CATEGORY_DERIVED = "category_derived"
BRAND = "brand"


class EventType(StrEnum):
    VIEW = "view"
    CART = "cart"
    FAV = "fav"
    PURCHASE = "purchase"
    RATING = "rating"
    IMPRESSION = "impression"  # an item was shown (by the API); no interest by itself
    CLICK = "click"  # a shown item was clicked


EVENT_TYPES: tuple[str, ...] = tuple(e.value for e in EventType)
# A control event, not behaviour: "forget this shopper" (stream.forget). The live job drops the
# shopper's state, writes nothing for it, and deletes the control entry once acknowledged.
FORGET = "forget"
FORGOTTEN = "_forgotten"  # the marker row the dataflow emits for it (the live sink consumes it)

# How strongly one event of each type signals interest (affinity and graph edge weights).
EVENT_WEIGHTS: dict[str, float] = {
    EventType.VIEW: 1.0,
    EventType.FAV: 2.0,
    EventType.CART: 3.0,
    EventType.RATING: 3.0,
    EventType.PURCHASE: 5.0,
    EventType.IMPRESSION: 0.0,
    EventType.CLICK: 1.0,
}

_PLURAL = {
    EventType.VIEW: "views",
    EventType.CART: "carts",
    EventType.FAV: "favs",
    EventType.PURCHASE: "purchases",
    EventType.RATING: "ratings",
    EventType.IMPRESSION: "impressions",
    EventType.CLICK: "clicks",
}

# Trailing windows (name -> seconds), and the resolution (seconds) to which a count over each
# is true at read time (core.windows): an event leaves a count at most this long late.
USER_WINDOWS: dict[str, int] = {"1h": 3_600, "24h": 86_400, "7d": 604_800}
ITEM_WINDOWS: dict[str, int] = {"24h": 86_400, "7d": 604_800, "30d": 2_592_000}
WINDOW_RESOLUTION_S: dict[str, int] = {"1h": 300, "24h": 3_600, "7d": 21_600, "30d": 86_400}


def count_feature(event_type: str, window: str) -> str:
    """``count_feature("view", "1h") == "views_1h"``."""
    return f"{_PLURAL[EventType(event_type)]}_{window}"


def count_features(windows: dict[str, int]) -> list[str]:
    return [count_feature(t, w) for t in EVENT_TYPES for w in windows]


# Entities (Feast names) and join keys.
USER = "user"
ITEM = "item"

# Feature views.
USER_BEHAVIOR = "user_behavior"
USER_INTEREST = "user_interest"
ITEM_STATS = "item_stats"
ITEM_FEEDBACK = "item_feedback"

EVENTS_TOTAL = "events_total"
COUNT_BUCKETS = "count_buckets"  # stored; windowed counts are computed from it at read time
CONVERSION_7D = "conversion_7d"
CTR_7D = "ctr_7d"
TOP_CATEGORIES = "top_categories"
TOP_CATEGORY_SCORES = "top_category_scores"
RECENT_ITEMS = "recent_items"
LAST_EVENT_TS = "last_event_ts"
# item_feedback: what the explore policy learns from (stream.steps.Feedback). Impressions
# count by how likely a shopper was to look at their position (examination), so an item
# shown low is not blamed for clicks it could not get; both sums decay with a half-life.
EXAMINED = "examined"  # decayed sum of the examination probabilities of its impressions
CLICKED = "clicked"  # decayed clicks
FEEDBACK_AS_OF = "feedback_as_of_s"  # the time (unix s) both sums are decayed to
CTR_DEBIASED = "ctr_debiased"  # clicked / examined (read time: unchanged by decay)
# The contextual policy's per-item sums (core.feedback): impressions' examination-weighted
# x x^T and clicks' x over their contexts x, decayed like the counts.
LINEAR_STATS = "linear_stats"

# Stored features (what the dataflow writes and Feast serves) ...
USER_BEHAVIOR_FEATURES: list[str] = [COUNT_BUCKETS, EVENTS_TOTAL]
USER_INTEREST_FEATURES: list[str] = [
    TOP_CATEGORIES,
    TOP_CATEGORY_SCORES,
    RECENT_ITEMS,
    LAST_EVENT_TS,
]
ITEM_STATS_FEATURES: list[str] = [COUNT_BUCKETS, EVENTS_TOTAL]
ITEM_FEEDBACK_FEATURES: list[str] = [EXAMINED, CLICKED, FEEDBACK_AS_OF, LINEAR_STATS]
# ... and the windowed features every reader computes from count_buckets at its read time
# (core.windows.add_read_time_columns): true when read, never stale.
READ_TIME_FEATURES: dict[str, list[str]] = {
    USER_BEHAVIOR: count_features(USER_WINDOWS),
    ITEM_STATS: [*count_features(ITEM_WINDOWS), CONVERSION_7D, CTR_7D],
}

VIEW_ENTITY_KEY: dict[str, str] = {
    USER_BEHAVIOR: USER_ID,
    USER_INTEREST: USER_ID,
    ITEM_STATS: ITEM_ID,
    ITEM_FEEDBACK: ITEM_ID,
}
VIEW_FEATURES: dict[str, list[str]] = {
    USER_BEHAVIOR: USER_BEHAVIOR_FEATURES,
    USER_INTEREST: USER_INTEREST_FEATURES,
    ITEM_STATS: ITEM_STATS_FEATURES,
    ITEM_FEEDBACK: ITEM_FEEDBACK_FEATURES,
}

# The backfill's record (in the offline store's folder) of the log it turned into features:
# the live job replays that log to continue from it (stream.live.backfill_history).
BACKFILL_MANIFEST = "_backfill.json"

# Feature services: one per consumer; never edited once a model depends on one (add _v2).
RANKER_V1 = "ranker_v1"
PROFILE_V1 = "profile_v1"
POLICY_V1 = "policy_v1"


def full_name(view: str, feature: str) -> str:
    """A feature's column name with ``full_feature_names=True`` (Feast): ``view__feature``."""
    return f"{view}__{feature}"


def push_source_name(view: str) -> str:
    return f"{view}_push"


def batch_source_name(view: str) -> str:
    return f"{view}_source"
