"""Users: ``/v1/users`` (shoppers the model was trained on), ``/v1/users/{user_id}/profile``."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query

from api.deps import BundleDep, StateDep, UserPath
from api.features import EVENTS_TOTAL, STORE_DOWN, read_context
from api.schemas import Profile, Shopper

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.get("", response_model=list[Shopper])
def shoppers(
    bundle: BundleDep, limit: Annotated[int, Query(ge=1, le=100, description="1..100")] = 12
) -> list[Shopper]:
    """Trained shoppers spread over history sizes (most to fewest items), so a demo can
    pick a heavy buyer or a light one."""
    users = list(bundle.users)
    if not users:
        return []
    history = np.diff(bundle.seen.indptr)[[bundle.users[u] for u in users]]
    order = np.argsort(-history, kind="stable")
    picks = order[np.unique(np.linspace(0, len(order) - 1, min(limit, len(order))).astype(int))]
    return [Shopper(user_id=users[i], history=int(history[i])) for i in picks.tolist()]


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
