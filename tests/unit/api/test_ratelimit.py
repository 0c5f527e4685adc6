"""api.ratelimit: per-client token buckets on a fake clock, and the ASGI middleware."""

import asyncio
import time

import pytest

from api.ratelimit import RateLimitMiddleware, TokenBuckets, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate():
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # empty: one token in 1 / rate seconds
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)
    clock.now += 10  # refills to the burst, not beyond
    assert [buckets.take("a") for _ in range(4)][-1] == pytest.approx(0.5)


def test_a_refused_request_does_not_spend_a_token():
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=1, clock=clock)
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(1.0)
    clock.now += 0.6
    assert buckets.take("a") == pytest.approx(0.4)  # the refusal above took nothing
    clock.now += 0.4
    assert buckets.take("a") == 0.0


def test_clients_have_their_own_buckets_and_old_ones_are_evicted():
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=2, clock=clock)
    assert buckets.take("a") == 0.0 and buckets.take("b") == 0.0
    assert buckets.take("a") > 0  # a is empty, b untouched
    assert buckets.take("c") == 0.0  # evicts the least recently seen (b)
    assert buckets.take("b") == 0.0  # b starts again full


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="rate must be"):
        TokenBuckets(rate=0, burst=1)


def test_the_client_is_its_key_else_its_address():
    keyed = {"headers": [(b"x-api-key", b"k1")], "client": ("10.0.0.1", 5)}
    assert client_key(keyed) == "key:k1"
    assert client_key({"headers": [], "client": ("10.0.0.1", 5)}) == "addr:10.0.0.1"
    assert client_key({"headers": []}) == "addr:unknown"


def _asgi_call(middleware, body=b"{}", path="/v1/score", headers=()):
    """One POST through ``middleware``; returns (status, headers, app_was_called)."""
    called, sent = [], []
    chunks = [body[:3], body[3:]]

    async def app(scope, receive, send):
        called.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": list(headers),
             "client": ("10.0.0.9", 1)}  # fmt: skip
    middleware.app = app
    asyncio.run(middleware(scope, receive, send))
    start = sent[0]
    return start["status"], dict(start["headers"]), bool(called)


def test_over_the_rate_a_request_waits_for_a_token_then_is_served():
    buckets = TokenBuckets(rate=20.0, burst=1)  # a token every 50 ms
    mw = RateLimitMiddleware(None, frozenset({"/v1/score"}), buckets, max_delay_s=1.0)
    assert _asgi_call(mw)[0] == 200
    started = time.monotonic()
    assert _asgi_call(mw)[0] == 200  # waited for the next token instead of a 429
    assert time.monotonic() - started >= 0.03


def test_a_token_too_far_away_is_a_429_and_the_body_is_dropped_unread_by_the_app():
    refused = []
    buckets = TokenBuckets(rate=0.01, burst=1)
    mw = RateLimitMiddleware(
        None, frozenset({"/v1/score"}), buckets, max_delay_s=1.0, on_refuse=refused.append
    )
    assert _asgi_call(mw)[0] == 200
    status, headers, called = _asgi_call(mw, body=b"not json at all")
    assert (status, called) == (429, False) and int(headers[b"retry-after"]) >= 1
    assert b"connection" not in headers  # the body was read off: the connection stays usable
    status, headers, _ = _asgi_call(mw, body=b"x" * 2_000_000)  # over the body limit
    assert status == 429 and headers[b"connection"] == b"close"
    assert refused == ["/v1/score", "/v1/score"]


def test_other_routes_are_not_limited():
    mw = RateLimitMiddleware(None, frozenset({"/v1/score"}), TokenBuckets(rate=0.01, burst=1))
    assert [_asgi_call(mw, path="/v1/events")[0] for _ in range(3)] == [200, 200, 200]
