"""Operations: health, readiness, metrics, the live job's progress, model reload."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import StateDep, WriteKey
from api.features import STORE_DOWN
from api.schemas import Health, Readiness, ReloadRequest, ReloadResponse, StreamStatus
from core.bus import stream_status
from models.artifact import ArtifactError, IncompleteArtifact

router = APIRouter(tags=["ops"])


@router.get("/health", response_model=Health)
def health() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model=Readiness)
def ready(state: StateDep, response: Response) -> Readiness:
    try:
        redis_ok = bool(state.redis.ping())
    except STORE_DOWN:
        redis_ok = False
    model = state.bundle.version if state.bundle else None
    ok = redis_ok and model is not None
    if not ok:
        response.status_code = 503
    return Readiness(ready=ok, redis=redis_ok, feature_store=True, model=model)


@router.get("/metrics")
def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/stream", response_model=StreamStatus)
def stream(state: StateDep) -> StreamStatus:
    """The live job's progress on the event stream: lag, pending, how stale the online
    features can be (``behind_s``) and when the job last read."""
    s = state.settings
    try:
        status = stream_status(state.redis, s.events_stream, s.consumer_group, s.event_partitions)
    except STORE_DOWN as exc:
        state.store_lost(exc)
        raise HTTPException(503, "event stream unavailable; retry shortly") from exc
    return StreamStatus(stream=s.events_stream, group=s.consumer_group, **vars(status))


@router.post("/v1/admin/reload", response_model=ReloadResponse, dependencies=[WriteKey])
def reload(state: StateDep, body: Annotated[ReloadRequest | None, Body()] = None) -> ReloadResponse:
    """Load a newer artifact (default: ``latest``) without restarting; requests in flight
    finish on the old one."""
    try:
        version, previous = state.load(body.version if body else None)
    except IncompleteArtifact as exc:  # the serving model stays
        serving = state.bundle.version if state.bundle else "none"
        raise HTTPException(409, f"{exc}; still serving {serving}") from exc
    except ArtifactError as exc:
        raise HTTPException(404, str(exc)) from exc
    return ReloadResponse(version=version, previous=previous)
