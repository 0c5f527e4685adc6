"""api.ratelimit.TokenBuckets: per-client token buckets on a fake clock."""

import pytest

from api.ratelimit import TokenBuckets, client_key


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
