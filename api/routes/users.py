"""Users: ``/v1/users`` (shoppers the model was trained on), ``/v1/users/{user_id}/profile``
(both need the read key), ``DELETE /v1/users/{user_id}`` (admin key: forget the shopper
everywhere, stream.forget)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import numpy as np
import redis
from fastapi import APIRouter, HTTPException, Query

from api.deps import BundleDep, ReadKey, StateDep, UserPath, WriteKey
from api.features import EVENTS_TOTAL, STORE_DOWN, read_context
from api.schemas import Forgotten, Profile, Shopper

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.get("", response_model=list[Shopper], dependencies=[ReadKey])
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


@router.get("/{user_id}/profile", response_model=Profile, dependencies=[ReadKey])
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


@router.delete("/{user_id}", response_model=Forgotten, dependencies=[WriteKey])
def forget(state: StateDep, user_id: UserPath) -> Forgotten:
    """Forget a shopper everywhere (online and offline store, event log and stream, dead
    letters, served answers, the model artifacts, the live job's state): their next event
    starts a new shopper. Answers what was removed where, never the data itself."""
    try:
        record = state.forget(user_id)
    except (redis.RedisError, OSError) as exc:
        raise HTTPException(
            503, f"forget stopped ({exc.__class__.__name__}): repeat the call to finish it"
        ) from exc
    return Forgotten(**asdict(record))
