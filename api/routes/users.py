"""Users: ``/v1/users/{user_id}/profile``."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from api.deps import StateDep, UserPath
from api.features import EVENTS_TOTAL, STORE_DOWN, read_context
from api.schemas import Profile

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.get("/{user_id}/profile", response_model=Profile)
def profile(state: StateDep, user_id: UserPath) -> Profile:
    """A shopper's online features (FeatureService profile_v1) and top interests."""
    try:
        ctx = read_context(state, user_id)
    except STORE_DOWN as exc:
        state.store_lost(exc)
        raise HTTPException(503, "online feature store unavailable; retry shortly") from exc
    return Profile(
        user_id=user_id,
        known=ctx.features.get(EVENTS_TOTAL) is not None,
        features=ctx.features,
        top_categories=ctx.top_categories,
        recent_items=ctx.recent_items,
    )
