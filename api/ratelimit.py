"""A per-client rate limit in front of the routes that run the text encoder.

The encoder guard (api.encoder) bounds what encoding costs, but a client flooding ``/v1/score``
still makes the server receive, parse and validate every large body before the guard says 429.
This limit answers before the body is read: each client (its ``X-API-Key`` if it sends one,
else its address) has a token bucket per limited route (``IG_SCORE_RATE_PER_S`` tokens a second,
up to ``IG_SCORE_BURST``); a request finding the bucket empty gets 429 with ``Retry-After`` and
the connection is closed, so its body is never parsed. Other routes pass straight through.

:class:`TokenBuckets` is the pure part (unit-tested); :class:`RateLimitMiddleware` is the ASGI
wrapper (added in api.app).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TokenBuckets:
    """``rate`` tokens a second per key, at most ``burst`` saved; ``max_keys`` most recently
    seen keys are kept (an evicted key starts again with a full bucket)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1 (got {rate}, {burst})")
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if there was one, else the seconds until there is."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens - 1.0 if wait == 0.0 else tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait


class RateLimitMiddleware:
    """429 + ``Retry-After`` + ``Connection: close`` for a client over its bucket on one of
    ``paths`` (exact path and method POST), answered before the request body is read."""

    def __init__(
        self, app: ASGIApp, paths: frozenset[str], buckets: TokenBuckets, on_refuse: Any = None
    ) -> None:
        self.app, self.paths, self.buckets = app, paths, buckets
        self.on_refuse = on_refuse  # called with the path of each refused request (metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(client_key(scope))
        if wait == 0.0:
            await self.app(scope, receive, send)
            return
        if self.on_refuse is not None:
            self.on_refuse(scope["path"])
        retry = max(1, math.ceil(wait))
        body = json.dumps(
            {"detail": f"too many requests to {scope['path']} from this client: retry in {retry} s"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(retry).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def client_key(scope: Scope) -> str:
    """The client a bucket belongs to: its API key if it sends one, else its address."""
    for name, value in scope.get("headers", ()):
        if name == b"x-api-key":
            return "key:" + value.decode("latin-1")
    client = scope.get("client")
    return "addr:" + (client[0] if client else "unknown")
