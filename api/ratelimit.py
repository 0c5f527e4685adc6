"""A per-client rate limit in front of the routes that run the text encoder.

The encoder guard (api.encoder) bounds what encoding costs, but a client flooding ``/v1/score``
still makes the server receive, parse and validate every large body before the guard says 429.
This limit acts before the body is parsed: each client (its ``X-API-Key`` if it sends one, else
its address) has a token bucket per limited route (``IG_SCORE_RATE_PER_S`` tokens a second, up
to ``IG_SCORE_BURST``); a request finding the bucket empty waits for a token up to
``IG_SCORE_MAX_DELAY_S``, else gets 429 with ``Retry-After`` and its body is dropped unparsed.
Other routes pass straight through.

:class:`TokenBuckets` is the pure part (unit-tested); :class:`RateLimitMiddleware` is the ASGI
wrapper (added in api.app).
"""

from __future__ import annotations

import asyncio
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
    """Per-client rate limit on ``paths`` (exact path, method POST), applied before the body is
    read. A request over its client's rate waits for a token, as nginx's ``limit_req`` delays
    excess requests, if one comes within ``max_delay_s`` (and fewer than ``max_waiting``
    requests wait already); otherwise it gets 429 with ``Retry-After``. Its body is read and
    dropped unparsed (``Connection: close`` instead when it is over ``max_body_bytes``). A client
    that sends as fast as it is answered is so slowed to its rate, at the cost of one sleeping
    task per waiting request."""

    def __init__(
        self,
        app: ASGIApp,
        paths: frozenset[str],
        buckets: TokenBuckets,
        max_delay_s: float = 1.0,
        max_waiting: int = 256,
        max_body_bytes: int = 1_000_000,
        on_refuse: Any = None,
    ) -> None:
        self.app, self.paths, self.buckets = app, paths, buckets
        self.max_delay_s = max_delay_s
        self.max_waiting = max_waiting
        self.max_body_bytes = max_body_bytes
        self.on_refuse = on_refuse  # called with the path of each refused request (metrics)
        self.waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        key, waited = client_key(scope), 0.0
        wait = self.buckets.take(key)
        while wait > 0.0 and waited + wait <= self.max_delay_s and self.waiting < self.max_waiting:
            self.waiting += 1
            try:
                await asyncio.sleep(wait)
            finally:
                self.waiting -= 1
            waited += wait
            wait = self.buckets.take(key)
        if wait == 0.0:
            await self.app(scope, receive, send)
            return
        if self.on_refuse is not None:
            self.on_refuse(scope["path"])
        retry = max(1, math.ceil(wait))
        body = json.dumps(
            {"detail": f"too many requests to {scope['path']} from this client: retry in {retry} s"}
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry).encode()),
        ]
        if not await _drain(receive, self.max_body_bytes):
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, limit: int) -> bool:
    """Read and drop a request body; False if it is over ``limit`` bytes (stopped reading) or
    the client left."""
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False
        size += len(message.get("body", b""))
        if size > limit:
            return False
        if not message.get("more_body", False):
            return True


def client_key(scope: Scope) -> str:
    """The client a bucket belongs to: its API key if it sends one, else its address."""
    for name, value in scope.get("headers", ()):
        if name == b"x-api-key":
            return "key:" + value.decode("latin-1")
    client = scope.get("client")
    return "addr:" + (client[0] if client else "unknown")
