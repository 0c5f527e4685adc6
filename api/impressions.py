"""What the API showed, written to the event stream off the request's path.

A response's impressions (one ``impression`` event per item: request id, position, policy,
explored, propensity) are put in a bounded in-process buffer; a background thread writes them
to the event stream in batches (one pipeline: XADDs, plus one hash per request that a later
click is attributed from, expiring after ``IG_REQUEST_TTL_S``). When Redis is unreachable the
buffer holds them and the thread retries; when the buffer is full the oldest are dropped and
counted (``ig_impressions_dropped_total``): the answer never waits for the log.

Each impression also carries ``propensities``: the probability with which every policy
(models.explore.POLICIES) would have put that item in that slot, so that ``ig evaluate-policy
--data stream`` can estimate any policy's CTR from any other's log. The thread computes them
just before it writes (a response hands it a function), not the request.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis

from core import names as n
from core.bus import EVENT_FIELD, partition_of, partition_streams

log = logging.getLogger(__name__)
REQUEST_KEY = n.REQUEST_KEY  # hash: item id -> JSON {position, policy, explored, propensity}
SHOWN = (n.POSITION, n.POLICY, n.EXPLORED, n.PROPENSITY, n.CONTEXT)
_COUNTERFACTUAL = "_counterfactual"  # on a response's first queued event, until it is written
Counterfactual = Callable[[np.random.Generator], dict[str, list[float]]]


def request_key(request_id: str) -> str:
    return REQUEST_KEY.format(request_id)


def new_request_id() -> str:
    return uuid.uuid4().hex


def impression_events(
    request_id: str,
    user_id: str,
    policy: str,
    shown: list[tuple[str, str | None, bool, float]],
    contexts: list[list[float]] | None = None,
) -> list[dict[str, Any]]:
    """One ``impression`` event per shown (item id, category, explored, propensity), in the
    order shown (position 0 first), stamped now; ``contexts``: each item's context features
    (models.explore.context_vectors), which the contextual policy learns from."""
    now = datetime.now(UTC).isoformat()
    contexts = contexts or [None] * len(shown)  # type: ignore[list-item]
    return [
        {
            n.USER_ID: user_id,
            n.ITEM_ID: item_id,
            n.EVENT_TYPE: n.EventType.IMPRESSION.value,
            n.EVENT_TIMESTAMP: now,
            n.VALUE: 1.0,
            n.CATEGORY_ID: category,
            n.REQUEST_ID: request_id,
            n.POSITION: position,
            n.POLICY: policy,
            n.EXPLORED: explored,
            n.PROPENSITY: round(propensity, 6),
            n.CONTEXT: context,
        }
        for position, ((item_id, category, explored, propensity), context) in enumerate(
            zip(shown, contexts, strict=True)
        )
    ]


class ImpressionLog:
    """Bounded buffer of impression events and the thread that writes them."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        metrics: Any,
        capacity: int,
        request_ttl_s: int,
        batch: int = 1000,
        interval_s: float = 0.05,
        partitions: int = 1,
    ) -> None:
        self._client, self._metrics = client, metrics
        self._streams, self._partitions = partition_streams(stream, partitions), partitions
        self._ttl, self._batch, self._interval = request_ttl_s, batch, interval_s
        self._buffer: deque[tuple[int, dict[str, Any]]] = deque()  # (sequence number, event)
        self._added = 0
        self._capacity = capacity
        self._rng = np.random.default_rng()  # the thread's own (numpy generators are not shared)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="impressions", daemon=True)
        self._thread.start()

    def add(
        self, events: list[dict[str, Any]], counterfactual: Counterfactual | None = None
    ) -> None:
        """Queue one response's impressions (never blocks on Redis); ``counterfactual``: rng ->
        {policy: [len(events)]} each policy's probability of each slot, run before writing."""
        if counterfactual is not None and events:
            events[0][_COUNTERFACTUAL] = (counterfactual, events)
        with self._lock:
            self._buffer.extend(enumerate(events, self._added))
            self._added += len(events)
            over = len(self._buffer) - self._capacity
            for _ in range(max(over, 0)):
                self._buffer.popleft()
        if over > 0:
            self._metrics.impressions_dropped.inc(over)
        self._metrics.impression_buffer.set(len(self._buffer))
        if len(self._buffer) >= self._batch:
            self._wake.set()

    def pending(self, request_id: str, item_id: str) -> dict[str, Any] | None:
        """A still-buffered impression of ``item_id`` in ``request_id`` (a click can come
        before the log is written)."""
        with self._lock:
            for _, event in reversed(self._buffer):
                if event[n.REQUEST_ID] == request_id and event[n.ITEM_ID] == item_id:
                    return event
        return None

    def forget(self, user_id: str) -> int:
        """Drop the buffered impressions of ``user_id`` (not yet written); returns how many."""
        with self._lock:
            kept = deque(x for x in self._buffer if x[1][n.USER_ID] != user_id)
            dropped = len(self._buffer) - len(kept)
            self._buffer = kept
        return dropped

    def flush(self) -> int:
        """Write what is buffered now; returns the impressions written (0 if Redis failed:
        they stay buffered)."""
        with self._lock:
            batch = [event for _, event in itertools.islice(self._buffer, self._batch * 10)]
            last = self._buffer[len(batch) - 1][0] if batch else -1
        if not batch:
            return 0
        for event in batch:
            if _COUNTERFACTUAL in event:
                self._complete(*event.pop(_COUNTERFACTUAL))
        try:
            self._write(batch)
        except (redis.RedisError, OSError) as exc:
            log.warning("impression log: event stream unavailable (%s); kept, retrying", exc)
            return 0
        with self._lock:  # what was written (drops while writing may have taken some already)
            while self._buffer and self._buffer[0][0] <= last:
                self._buffer.popleft()
        self._metrics.impressions_logged.inc(len(batch))
        self._metrics.impression_buffer.set(len(self._buffer))
        return len(batch)

    def _complete(self, counterfactual: Counterfactual, events: list[dict[str, Any]]) -> None:
        """Stamp a response's impressions with every policy's probability of their slot (an
        impression is written without them rather than lost if that fails)."""
        try:
            probs = counterfactual(self._rng)
        except Exception:  # a bug here must not cost the impressions
            log.exception("impression log: counterfactual propensities failed")
            return
        for position, event in enumerate(events):
            event[n.PROPENSITIES] = {policy: p[position] for policy, p in probs.items()}

    def _write(self, batch: list[dict[str, Any]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        by_request: dict[str, dict[str, str]] = {}
        for event in batch:
            stream = self._streams[partition_of(event.get(n.USER_ID), self._partitions)]
            pipe.xadd(stream, {EVENT_FIELD: json.dumps(event)})
            shown = {k: event[k] for k in SHOWN}
            by_request.setdefault(event[n.REQUEST_ID], {})[event[n.ITEM_ID]] = json.dumps(shown)
        for request_id, items in by_request.items():
            pipe.hset(request_key(request_id), mapping=items)
            pipe.expire(request_key(request_id), self._ttl)
        pipe.execute()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if not self.flush() and self._buffer:
                self._stop.wait(0.5)  # Redis is down: back off

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the thread after writing what it can within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        self._thread.join(timeout_s)
        while self._buffer and time.monotonic() < deadline and self.flush():
            pass


def attribution(
    client: redis.Redis, log_: ImpressionLog | None, request_id: str, item_id: str
) -> dict[str, Any] | None:
    """How ``item_id`` was shown in answer ``request_id`` ({position, policy, explored,
    propensity, context}), or None if that answer did not show it (or is older than the TTL)."""
    if log_ is not None and (event := log_.pending(request_id, item_id)) is not None:
        return {k: event[k] for k in SHOWN}
    raw = client.hget(request_key(request_id), item_id)
    return json.loads(raw) if raw is not None else None
