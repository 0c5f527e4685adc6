"""Events: ``POST /v1/events`` writes behaviour onto the event bus the live job reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, HTTPException

from api.deps import StateDep, WriteKey
from api.features import STORE_DOWN
from api.impressions import attribution
from api.schemas import EventBatch, EventIn, EventsAccepted
from core import names as n
from core.bus import publish

if TYPE_CHECKING:
    from api.state import State

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
    attribute(state, canonical)
    if state.bundle is not None:  # the catalogue knows categories the caller may not send
        for event in canonical:
            ix = state.bundle.index.get(event[n.ITEM_ID])
            if event[n.CATEGORY_ID] is None and ix is not None:
                event[n.CATEGORY_ID] = state.bundle.categories[ix]
    try:
        s = state.settings
        ids = publish(state.redis, s.events_stream, canonical, s.event_partitions)
    except STORE_DOWN as exc:
        raise HTTPException(503, f"event stream unavailable, nothing written: {exc}") from exc
    state.metrics.events_accepted.inc(len(ids))
    return EventsAccepted(accepted=len(ids), stream=state.settings.events_stream, ids=ids)


def attribute(state: State, events: list[dict[str, Any]]) -> None:
    """Events that name the answer they came from (``request_id``) get the slot it showed the
    item in: position, policy, explored, propensity. 422 (nothing written) when that answer
    did not show the item or is older than IG_REQUEST_TTL_S."""
    unknown = []
    for i, event in enumerate(events):
        request_id = event.pop(n.REQUEST_ID, None)
        if request_id is None:
            continue
        try:
            shown = attribution(state.redis, state.impressions, request_id, event[n.ITEM_ID])
        except STORE_DOWN as exc:
            raise HTTPException(503, f"event stream unavailable, nothing written: {exc}") from exc
        if shown is None:
            unknown.append(i)
            continue
        event.update({n.REQUEST_ID: request_id, **shown})
    if unknown:
        raise HTTPException(
            422,
            f"event(s) {unknown[:10]} name a request_id whose answer did not show their item "
            f"(or is older than {state.settings.request_ttl_s} s); nothing written",
        )
    clicks = [e for e in events if e[n.EVENT_TYPE] == n.EventType.CLICK]
    for attributed in (True, False):
        got = sum((n.REQUEST_ID in e) == attributed for e in clicks)
        state.metrics.clicks.labels(str(attributed).lower()).inc(got)
