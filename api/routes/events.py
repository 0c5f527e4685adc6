"""Events: ``POST /v1/events`` writes behaviour onto the event bus the live job reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException

from api.deps import StateDep, WriteKey
from api.features import STORE_DOWN
from api.schemas import EventBatch, EventIn, EventsAccepted
from core import names as n
from core.bus import publish

router = APIRouter(prefix="/v1", tags=["events"])


@router.post("/events", response_model=EventsAccepted, status_code=202, dependencies=[WriteKey])
def events(state: StateDep, body: Annotated[EventIn | EventBatch, Body()]) -> EventsAccepted:
    """One event or ``{"events": [...]}``, written to the Redis Stream the live dataflow
    reads. Nothing is written unless every event is valid."""
    batch = body.events if isinstance(body, EventBatch) else [body]
    limit = datetime.now(UTC) + timedelta(seconds=state.settings.future_tolerance_s)
    ahead = [i for i, e in enumerate(batch) if e.event_timestamp and e.event_timestamp > limit]
    if ahead:
        raise HTTPException(
            422,
            f"event_timestamp of event(s) {ahead[:10]} is more than "
            f"{state.settings.future_tolerance_s} s ahead of the server clock "
            f"({limit.isoformat()}); nothing written",
        )
    canonical = [e.canonical() for e in batch]
    if state.bundle is not None:  # the catalogue knows categories the caller may not send
        for event in canonical:
            ix = state.bundle.index.get(event[n.ITEM_ID])
            if event[n.CATEGORY_ID] is None and ix is not None:
                event[n.CATEGORY_ID] = state.bundle.categories[ix]
    try:
        ids = publish(state.redis, state.settings.events_stream, canonical)
    except STORE_DOWN as exc:
        raise HTTPException(503, f"event stream unavailable, nothing written: {exc}") from exc
    state.metrics.events_accepted.inc(len(ids))
    return EventsAccepted(accepted=len(ids), stream=state.settings.events_stream, ids=ids)
