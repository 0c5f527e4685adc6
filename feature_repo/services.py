"""Feature services: one per consumer. Never edit one a model depends on; add _v2 instead."""

from feast import FeatureService
from views import item_feedback, item_stats, user_behavior, user_interest

from core import names as n

ranker_v1 = FeatureService(
    name=n.RANKER_V1,
    features=[user_behavior, user_interest, item_stats],
    description="Ranker training (get_historical_features) and API scoring (online).",
)
profile_v1 = FeatureService(
    name=n.PROFILE_V1,
    features=[user_behavior, user_interest],
    description="A shopper's profile: behaviour counts, top categories, recent items.",
)
policy_v1 = FeatureService(
    name=n.POLICY_V1,
    features=[item_feedback],
    description="The explore/exploit policy's per-item feedback (API, online).",
)
