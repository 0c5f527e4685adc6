"""api.encoder: the bounds on what one request may spend on the text encoder."""

import threading
import time

import numpy as np
import pytest

from api.encoder import EncoderBusy, GuardedEncoder, TooMuchText
from api.metrics import ApiMetrics


class SlowEncoder:
    """Stands in for MiniLM: holds the slot until released."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def encode(self, texts):
        self.entered.set()
        self.release.wait(5)
        return np.zeros((len(texts), 3))


def test_guarded_encoder_refuses_too_much_text_and_a_busy_encoder():
    metrics = ApiMetrics()
    inner = SlowEncoder()
    guard = GuardedEncoder(inner, max_chars=10, concurrency=1, wait_s=0.01, metrics=metrics)
    with pytest.raises(TooMuchText, match="11 characters of text to encode; at most 10"):
        guard.encode(["hello", "world!"])
    worker = threading.Thread(target=guard.encode, args=(["busy"],))
    worker.start()
    assert inner.entered.wait(5)
    with pytest.raises(EncoderBusy) as busy:
        guard.encode(["next"])
    assert busy.value.retry_after_s == 1
    inner.release.set()
    worker.join(5)
    assert guard.encode(["free"]).shape == (1, 3)  # the slot is back
    text = metrics.registry.get_sample_value
    assert text("ig_encoder_refused_total", {"reason": "too_much_text"}) == 1
    assert text("ig_encoder_refused_total", {"reason": "busy"}) == 1


class TimedEncoder:
    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls = seconds, 0

    def encode(self, texts):
        self.calls += 1
        time.sleep(self.seconds)
        return np.zeros((len(texts), 3))


def test_long_encodes_rest_for_their_share_and_short_ones_go_on():
    inner = TimedEncoder(0.1)
    guard = GuardedEncoder(inner, 100_000, 1, wait_s=0.01, metrics=ApiMetrics(), share=0.5)
    long_text = ["x" * 600]
    guard.encode(long_text)
    with pytest.raises(EncoderBusy):  # it encoded ~0.1 s: it rests as long
        guard.encode(long_text)
    assert guard.encode(["a short query"]).shape == (1, 3)  # short texts do not wait
    time.sleep(max(guard._free_at - time.monotonic(), 0) + 0.01)
    assert guard.encode(long_text).shape == (1, 3)
    assert inner.calls == 3
