"""FastAPI app factory: health, readiness, metrics and the shopper profile from Feast online.

The recommend/score/search endpoints belong to the scoring-API issue and build on this.
Run: ``make serve`` (uvicorn ``api.app:create_app --factory``).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel

from core import names as n
from core.redis_server import redis_client
from core.settings import Settings, get_settings

log = logging.getLogger(__name__)


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    redis: bool
    feature_store: bool


class Profile(BaseModel):
    user_id: str
    known: bool
    features: dict[str, Any]
    top_categories: list[str]
    recent_items: list[str]


class State:
    """What the lifespan loads once: settings, the Feast store, metrics."""

    def __init__(self, settings: Settings) -> None:
        from core.feast_store import open_store

        self.settings = settings
        self.store = open_store(settings)
        self.profile_service = self.store.get_feature_service(n.PROFILE_V1)
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ig_requests_total",
            "Requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ig_request_seconds", "Request latency by route", ["route"], registry=self.registry
        )
        self.redis = redis_client(settings, timeout=0.5)


def get_state(request: Request) -> State:
    return request.app.state.ig


StateDep = Annotated[State, Depends(get_state)]


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ig = State(settings or get_settings())
        gc.collect()
        gc.freeze()  # Feast's start-up objects stay out of every later GC pass
        yield

    app = FastAPI(title="InterestGraph", version="0.1.0", lifespan=lifespan)

    @app.middleware("http")
    async def observe(request: Request, call_next):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        state = getattr(request.app.state, "ig", None)
        if state is not None:
            state.requests.labels(name, str(response.status_code)).inc()
            state.latency.labels(name).observe(time.perf_counter() - started)
        return response

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(status="ok")

    @app.get("/ready", response_model=Readiness)
    def ready(state: StateDep, response: Response) -> Readiness:
        try:
            redis_ok = bool(state.redis.ping())
        except redis.RedisError:
            redis_ok = False
        if not redis_ok:
            response.status_code = 503
        return Readiness(ready=redis_ok, redis=redis_ok, feature_store=True)

    @app.get("/metrics")
    def metrics(state: StateDep) -> Response:
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/users/{user_id}/profile", response_model=Profile)
    def profile(
        state: StateDep,
        user_id: Annotated[str, Path(min_length=1, max_length=128)],
    ) -> Profile:
        """A shopper's online features (FeatureService profile_v1) and top interests."""
        try:
            online = state.store.get_online_features(
                features=state.profile_service,
                entity_rows=[{n.USER_ID: user_id}],
                full_feature_names=True,
            ).to_dict()
        except redis.RedisError as exc:
            log.warning("online store unavailable: %s", exc)
            raise HTTPException(503, "online feature store unavailable; retry shortly") from exc
        values = {k: v[0] for k, v in online.items() if k != n.USER_ID}
        known = values.get(f"{n.USER_BEHAVIOR}__{n.EVENTS_TOTAL}") is not None
        return Profile(
            user_id=user_id,
            known=known,
            features=values,
            top_categories=values.get(f"{n.USER_INTEREST}__{n.TOP_CATEGORIES}") or [],
            recent_items=values.get(f"{n.USER_INTEREST}__{n.RECENT_ITEMS}") or [],
        )

    return app
