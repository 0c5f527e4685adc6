"""FastAPI app factory: the scoring API.

Run: ``make serve`` (uvicorn ``api.app:create_app --factory``); OpenAPI at ``/docs``.
Routes that call Feast's synchronous SDK or torch are plain ``def`` (they run in the thread pool).
"""

from __future__ import annotations

import gc
import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Body, Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import pipeline as pl
from api.bundle import NONE, ArtifactError, Bundle
from api.schemas import (
    MAX_K,
    EventBatch,
    EventIn,
    EventsAccepted,
    Health,
    Profile,
    Readiness,
    Recommendations,
    ReloadRequest,
    ReloadResponse,
    ScoreRequest,
    ScoreResponse,
    SearchResponse,
    SimilarItem,
    SimilarResponse,
)
from api.state import State
from core import names as n
from core.settings import Settings, get_settings

log = logging.getLogger(__name__)


def get_state(request: Request) -> State:
    return request.app.state.ig


def get_bundle(request: Request) -> Bundle:
    bundle = request.app.state.ig.bundle
    if bundle is None:
        raise HTTPException(503, "no model loaded: run `make train`, then POST /v1/admin/reload")
    return bundle


api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def require_key(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> None:
    expected = request.app.state.ig.settings.api_key
    if expected is None:
        raise HTTPException(403, "writes are disabled: set IG_API_KEY on the server")
    if key is None or not hmac.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong X-API-Key")


StateDep = Annotated[State, Depends(get_state)]
BundleDep = Annotated[Bundle, Depends(get_bundle)]
UserPath = Annotated[str, Path(min_length=1, max_length=128)]
K = Annotated[int, Query(ge=1, le=MAX_K, description=f"How many items (1..{MAX_K}).")]
Explore = Annotated[
    str,
    Query(
        pattern=r"^(auto|off|0(\.\d{1,4})?|1(\.0{1,4})?)$",
        description="auto: by history length; off; or a share 0..1 (capped at the policy's max).",
    ),
]


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ig = State(settings or get_settings())
        gc.collect()
        gc.freeze()  # Feast's and torch's start-up objects stay out of every later GC pass
        yield

    app = FastAPI(
        title="InterestGraph",
        version="0.1.0",
        description="Real-time recommendation on a feature store (Feast + Redis).",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def observe(request: Request, call_next):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        state = getattr(request.app.state, "ig", None)
        limit = state.settings.max_body_bytes if state else 1_000_000
        length = request.headers.get("content-length")
        if request.method in ("POST", "PUT", "PATCH"):
            if length is None and request.headers.get("transfer-encoding"):
                return JSONResponse({"detail": "send a Content-Length"}, status_code=411)
            if length is not None and (not length.isdigit() or int(length) > limit):
                return JSONResponse({"detail": f"request body over {limit} bytes"}, status_code=413)
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        if state is not None:
            state.requests.labels(name, str(response.status_code)).inc()
            state.latency.labels(name).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        message = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in errors[:5]
        )
        detail = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in errors]
        return JSONResponse({"message": message, "detail": detail}, status_code=422)

    @app.get("/health", response_model=Health, tags=["ops"])
    def health() -> Health:
        return Health(status="ok")

    @app.get("/ready", response_model=Readiness, tags=["ops"])
    def ready(state: StateDep, response: Response) -> Readiness:
        try:
            redis_ok = bool(state.redis.ping())
        except pl.STORE_DOWN:
            redis_ok = False
        model = state.bundle.version if state.bundle else None
        ok = redis_ok and model is not None
        if not ok:
            response.status_code = 503
        return Readiness(ready=ok, redis=redis_ok, feature_store=True, model=model)

    @app.get("/metrics", tags=["ops"])
    def metrics(state: StateDep) -> Response:
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/recommend/{user_id}", response_model=Recommendations, tags=["recommend"])
    def recommend(
        state: StateDep, bundle: BundleDep, user_id: UserPath, k: K = 20, explore: Explore = "auto"
    ) -> Recommendations:
        """Ranked items with scores and reasons: candidates → hydrate → score → explore →
        filter → explain. Unknown users get the cold-start path; Redis down → popularity with
        ``degraded: true``."""
        return pl.recommend(state, user_id, k, explore)

    @app.post("/v1/score", response_model=ScoreResponse, tags=["recommend"])
    def score(state: StateDep, bundle: BundleDep, body: ScoreRequest) -> ScoreResponse:
        """Scores for a caller's own candidates. An item the model has never seen is placed by
        its ``title`` (text projection); without one it is scored on features alone."""
        refs = [(r, None) if isinstance(r, str) else (r.item_id, r.title) for r in body.items]
        return pl.score_items(state, bundle, body.user_id, refs)

    @app.get("/v1/search", response_model=SearchResponse, tags=["recommend"])
    def search(
        state: StateDep,
        bundle: BundleDep,
        q: Annotated[str, Query(min_length=1, max_length=256, description="Free text.")],
        user_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
        k: K = 20,
    ) -> SearchResponse:
        """Semantic search over item titles (MiniLM); re-ranked by the user's interests when a
        ``user_id`` is given."""
        if bundle.text is None or state.encoder is None:
            raise HTTPException(503, "this model artifact has no text index")
        if not q.strip():
            raise HTTPException(422, "q must contain non-blank text")
        return pl.search(state, bundle, q, user_id, k)

    @app.get("/v1/items/{item_id}/similar", response_model=SimilarResponse, tags=["recommend"])
    def similar(
        bundle: BundleDep, item_id: Annotated[str, Path(min_length=1, max_length=128)], k: K = 20
    ) -> SimilarResponse:
        """Neighbours in the item embedding space; a cold item is placed by its title."""
        row = bundle.index.get(item_id)
        if row is None:
            raise HTTPException(
                404, f"unknown item {item_id!r}; POST /v1/score with a title places a new item"
            )
        if bundle.placed_by[row] == NONE:
            raise HTTPException(
                404, f"item {item_id!r} has no embedding (not in the graph, no title)"
            )
        rows, sims = bundle.similar(row, k)
        return SimilarResponse(
            item_id=item_id,
            placed_by=str(bundle.placed_by[row]),
            items=[
                SimilarItem(
                    item_id=bundle.ids[r],
                    title=bundle.titles[r],
                    category=bundle.categories[r],
                    similarity=round(float(s), 6),
                )
                for r, s in zip(rows.tolist(), sims.tolist(), strict=True)
            ],
        )

    @app.post(
        "/v1/events",
        response_model=EventsAccepted,
        status_code=202,
        tags=["events"],
        dependencies=[Depends(require_key)],
    )
    def events(state: StateDep, body: Annotated[EventIn | EventBatch, Body()]) -> EventsAccepted:
        """One event or ``{"events": [...]}``, written to the Redis Stream the live dataflow
        reads. Nothing is written unless every event is valid."""
        from stream.live import publish

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
        rows = [e.canonical() for e in batch]
        if state.bundle is not None:  # the catalogue knows categories the caller may not send
            for row in rows:
                at = state.bundle.index.get(row[n.ITEM_ID])
                if row[n.CATEGORY_ID] is None and at is not None:
                    row[n.CATEGORY_ID] = state.bundle.categories[at]
        try:
            ids = publish(state.redis, state.settings.events_stream, rows)
        except pl.STORE_DOWN as exc:
            raise HTTPException(503, f"event stream unavailable, nothing written: {exc}") from exc
        state.events_accepted.inc(len(ids))
        return EventsAccepted(accepted=len(ids), stream=state.settings.events_stream, ids=ids)

    @app.get("/v1/users/{user_id}/profile", response_model=Profile, tags=["users"])
    def profile(state: StateDep, user_id: UserPath) -> Profile:
        """A shopper's online features (FeatureService profile_v1) and top interests."""
        try:
            ctx = pl.read_context(state, user_id)
        except pl.STORE_DOWN as exc:
            state.store_lost(exc)
            raise HTTPException(503, "online feature store unavailable; retry shortly") from exc
        return Profile(
            user_id=user_id,
            known=ctx.features.get(pl.EVENTS_TOTAL) is not None,
            features=ctx.features,
            top_categories=ctx.top_categories,
            recent_items=ctx.recent_items,
        )

    @app.post(
        "/v1/admin/reload",
        response_model=ReloadResponse,
        tags=["ops"],
        dependencies=[Depends(require_key)],
    )
    def reload(
        state: StateDep, body: Annotated[ReloadRequest | None, Body()] = None
    ) -> ReloadResponse:
        """Load a newer artifact (default: ``latest``) without restarting; requests in flight
        finish on the old one."""
        try:
            version, previous = state.load(body.version if body else None)
        except ArtifactError as exc:
            raise HTTPException(404, str(exc)) from exc
        return ReloadResponse(version=version, previous=previous)

    return app
