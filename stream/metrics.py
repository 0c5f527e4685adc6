"""Prometheus metrics of the live job (one registry per process, created on first use)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class StreamMetrics:
    registry: CollectorRegistry
    events_in: Counter
    rows_out: Counter
    events_acked: Counter
    dead_letters: Counter
    consumer_lag: Gauge
    freshness: Histogram
    redis_retries: Counter
    history_replayed: Counter
    freshness_samples: deque[float]  # the latest per-event freshness values (benchmarks)
    lags: dict[int, int] = field(default_factory=dict)  # per bus partition read here

    def set_lag(self, partition: int, lag: int) -> None:
        """Lag of one bus partition; the gauge shows the sum over the partitions read here."""
        self.lags[partition] = lag
        self.consumer_lag.set(sum(self.lags.values()))

    def summary(self) -> str:
        def val(metric: Counter | Gauge) -> float:
            return next(iter(metric.collect())).samples[0].value

        count = sum(
            s.value
            for s in next(iter(self.freshness.collect())).samples
            if s.name.endswith("_count")
        )
        total = sum(
            s.value for s in next(iter(self.freshness.collect())).samples if s.name.endswith("_sum")
        )
        mean_ms = 1000 * total / count if count else 0.0
        return (
            f"history replayed {val(self.history_replayed):.0f} · "
            f"events in {val(self.events_in):.0f} · rows out {val(self.rows_out):.0f} · "
            f"acked {val(self.events_acked):.0f} · dead letters {val(self.dead_letters):.0f}"
            f" · lag {val(self.consumer_lag):.0f} · freshness mean {mean_ms:.0f} ms"
        )


@lru_cache(maxsize=1)
def stream_metrics() -> StreamMetrics:
    reg = CollectorRegistry()
    return StreamMetrics(
        reg,
        Counter("ig_stream_events_in", "Entries read from the event stream", registry=reg),
        Counter("ig_stream_rows_out", "Feature rows written (offline and online)", registry=reg),
        Counter(
            "ig_stream_events_acked",
            "Events acknowledged after their rows were written",
            registry=reg,
        ),
        Counter(
            "ig_stream_dead_letters",
            "Malformed events sent to the dead-letter stream",
            registry=reg,
        ),
        Gauge(
            "ig_stream_consumer_lag",
            "Entries in the stream not yet delivered to the group",
            registry=reg,
        ),
        Histogram(
            "ig_stream_freshness_seconds",
            "XADD to online write, per event",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=reg,
        ),
        Counter(
            "ig_stream_redis_retries", "Writes retried while Redis was unavailable", registry=reg
        ),
        Counter(
            "ig_stream_history_replayed",
            "Events replayed (log and already-processed entries) to rebuild state at start",
            registry=reg,
        ),
        deque(maxlen=100_000),
    )


def report_every(seconds: float, stop: threading.Event) -> threading.Thread:
    """Print the metrics summary every ``seconds`` until ``stop`` is set (daemon thread)."""

    def loop() -> None:
        while not stop.wait(seconds):
            print(f"[{time.strftime('%H:%M:%S')}] {stream_metrics().summary()}", flush=True)

    thread = threading.Thread(target=loop, name="stream-report", daemon=True)
    thread.start()
    return thread
