"""FastAPI app factory: the scoring API.

Run: ``make serve`` (uvicorn ``api.app:create_app --factory``); OpenAPI at ``/docs``.
Routers (one per resource) live in ``api/routes``, dependencies in ``api/deps.py``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from api.encoder import EncoderBusy, TooMuchText
from api.ratelimit import RateLimitMiddleware, TokenBuckets
from api.routes import ROUTERS
from api.state import State
from core.settings import Settings, get_settings

SHOP_DIR = Path(__file__).resolve().parent / "static" / "shop"


RATE_LIMITED = frozenset({"/v1/score"})  # routes that run the text encoder on long texts


def create_app(settings: Settings | None = None) -> FastAPI:
    cfg = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ig = State(cfg)
        gc.collect()
        gc.freeze()  # Feast's and torch's start-up objects stay out of every later GC pass
        yield
        app.state.ig.close()

    app = FastAPI(
        title="InterestGraph",
        version="0.1.0",
        description="Real-time recommendation on a feature store (Feast + Redis).",
        lifespan=lifespan,
    )
    app.middleware("http")(observe)

    def refused(path: str) -> None:
        state = getattr(app.state, "ig", None)
        if state is not None:
            state.metrics.rate_limited.labels(path).inc()

    # outermost: a client over its rate is answered before anything reads its body
    buckets = TokenBuckets(cfg.score_rate_per_s, cfg.score_burst)
    app.add_middleware(
        RateLimitMiddleware,
        paths=RATE_LIMITED,
        buckets=buckets,
        max_delay_s=cfg.score_max_delay_s,
        max_body_bytes=cfg.max_body_bytes,
        on_refuse=refused,
    )
    app.add_exception_handler(RequestValidationError, invalid)  # type: ignore[arg-type]
    app.add_exception_handler(TooMuchText, too_much_text)  # type: ignore[arg-type]
    app.add_exception_handler(EncoderBusy, encoder_busy)  # type: ignore[arg-type]
    for router in ROUTERS:
        app.include_router(router)
    # The shop page (/shop/): plain HTML, CSS and one script calling the routes above.
    app.mount("/shop", StaticFiles(directory=SHOP_DIR, html=True), name="shop")
    return app


async def observe(request: Request, call_next) -> Response:  # type: ignore[no-untyped-def]
    """Refuse oversized or unsized bodies (413/411); count and time every request."""
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
    name = getattr(request.scope.get("route"), "path", "unmatched")
    if state is not None:
        state.metrics.requests.labels(name, str(response.status_code)).inc()
        state.metrics.latency.labels(name).observe(time.perf_counter() - started)
    return response


async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with a one-line ``message`` naming each bad field, and the details."""
    errors = exc.errors()
    message = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
        for e in errors[:5]
    )
    detail = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in errors]
    return JSONResponse({"message": message, "detail": detail}, status_code=422)


async def too_much_text(request: Request, exc: TooMuchText) -> JSONResponse:
    return JSONResponse({"message": str(exc), "detail": str(exc)}, status_code=422)


async def encoder_busy(request: Request, exc: EncoderBusy) -> JSONResponse:
    """429 with ``Retry-After``: the encoder's slots are taken (api.encoder)."""
    return JSONResponse(
        {"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after_s)}
    )
