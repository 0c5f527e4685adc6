"""The text encoder behind a guard: what one request may cost is bounded.

Encoding runs MiniLM on the CPU, the most expensive thing a request can ask for (``/v1/score``
encodes the title of every item the model has never seen; ``/v1/search`` its query). Two
bounds keep a caller from spending the server's CPU on it: the characters one request sends
through the encoder (``IG_ENCODE_MAX_CHARS``, more is a 422 that says so) and the requests
encoding at once (``IG_ENCODER_CONCURRENCY``): a request that finds no free slot within
``IG_ENCODER_WAIT_S`` gets 429 with ``Retry-After``, and every other route keeps its cores.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


class TooMuchText(ValueError):
    """A request's texts are over the characters one request may encode."""


class EncoderBusy(RuntimeError):
    """Every encoder slot is taken: try again after ``retry_after_s``."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the text encoder is busy: retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class GuardedEncoder:
    """``encode`` of ``encoder`` (models.text.TextEncoder) within the bounds above."""

    def __init__(
        self, encoder: Any, max_chars: int, concurrency: int, wait_s: float, metrics: Any
    ) -> None:
        self._encoder = encoder
        self._max_chars = max_chars
        self._slots = threading.BoundedSemaphore(concurrency)
        self._wait_s = wait_s
        self._metrics = metrics

    def encode(self, texts: list[str]) -> np.ndarray:
        chars = sum(len(t) for t in texts)
        if chars > self._max_chars:
            self._metrics.encoder_refused.labels("too_much_text").inc()
            raise TooMuchText(
                f"{chars} characters of text to encode; at most {self._max_chars} per request "
                "(IG_ENCODE_MAX_CHARS): send fewer or shorter titles"
            )
        if not self._slots.acquire(timeout=self._wait_s):
            self._metrics.encoder_refused.labels("busy").inc()
            raise EncoderBusy(retry_after_s=1)
        try:
            return self._encoder.encode(texts)
        finally:
            self._slots.release()
