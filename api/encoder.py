"""The text encoder behind a guard: what one request may cost is bounded.

Encoding runs MiniLM on the CPU, the most expensive thing a request can ask for (``/v1/score``
encodes the title of every item the model has never seen; ``/v1/search`` its query). Two
bounds keep a caller from spending the server's CPU on it: the characters one request sends
through the encoder (``IG_ENCODE_MAX_CHARS``, more is a 422 that says so), the requests
encoding at once (``IG_ENCODER_CONCURRENCY``), and the share of time a slot may spend encoding
(``IG_ENCODER_SHARE``: after an encode of d seconds the slot rests d * (1 / share - 1)). A
request that finds no slot free within ``IG_ENCODER_WAIT_S`` gets 429 with ``Retry-After``, so
a flood of long titles spends at most ``concurrency * share`` of a core and every other route
keeps the rest. Short texts (a search query: ``SHORT_CHARS`` or fewer) have a slot of their
own, without the rest, so a flood of long titles does not turn searches away.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np


class TooMuchText(ValueError):
    """A request's texts are over the characters one request may encode."""


class EncoderBusy(RuntimeError):
    """Every encoder slot is taken: try again after ``retry_after_s``."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the text encoder is busy: retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


SHORT_CHARS = 512  # a search query (at most 256) and a title or two


class GuardedEncoder:
    """``encode`` of ``encoder`` (models.text.TextEncoder) within the bounds above."""

    def __init__(
        self,
        encoder: Any,
        max_chars: int,
        concurrency: int,
        wait_s: float,
        metrics: Any,
        share: float = 1.0,
    ) -> None:
        self._encoder = encoder
        self._max_chars = max_chars
        self._slots = threading.BoundedSemaphore(concurrency)
        self._short = threading.BoundedSemaphore(1)  # short texts: ~10 ms each, no rest
        self._wait_s = wait_s
        self._metrics = metrics
        self._rest = 1.0 / share - 1.0  # seconds of rest per second of encoding
        self._lock = threading.Lock()
        self._free_at = 0.0  # monotonic time before which every slot rests

    def encode(self, texts: list[str]) -> np.ndarray:
        chars = sum(len(t) for t in texts)
        if chars > self._max_chars:
            self._metrics.encoder_refused.labels("too_much_text").inc()
            raise TooMuchText(
                f"{chars} characters of text to encode; at most {self._max_chars} per request "
                "(IG_ENCODE_MAX_CHARS): send fewer or shorter titles"
            )
        if chars <= SHORT_CHARS:
            return self._short_encode(texts)
        if not self._slots.acquire(timeout=self._wait_s):
            self._metrics.encoder_refused.labels("busy").inc()
            raise EncoderBusy(retry_after_s=1)
        with self._lock:
            resting = self._free_at - time.monotonic()
        if resting > self._wait_s:  # the encoder has had its share of time lately
            self._slots.release()
            self._metrics.encoder_refused.labels("busy").inc()
            raise EncoderBusy(retry_after_s=max(1, math.ceil(resting)))
        time.sleep(max(resting, 0.0))
        started = time.monotonic()
        try:
            return self._encoder.encode(texts)
        finally:
            done = time.monotonic()
            with self._lock:
                self._free_at = max(self._free_at, done + (done - started) * self._rest)
            self._slots.release()

    def encode_admin(self, texts: list[str]) -> np.ndarray:
        """The catalogue's titles (an admin write, PUT /v1/items): no size bound, and it waits
        for a free slot instead of refusing (requests keep their limits)."""
        with self._slots:
            return self._encoder.encode(texts)

    def _short_encode(self, texts: list[str]) -> np.ndarray:
        if not self._short.acquire(timeout=self._wait_s):
            self._metrics.encoder_refused.labels("busy").inc()
            raise EncoderBusy(retry_after_s=1)
        try:
            return self._encoder.encode(texts)
        finally:
            self._short.release()
