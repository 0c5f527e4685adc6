"""The API's Prometheus metrics (one registry per app)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


@dataclass
class ApiMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        reg = self.registry
        self.requests = Counter(
            "ig_requests_total", "Requests by route and status", ["route", "status"], registry=reg
        )
        self.latency = Histogram(
            "ig_request_seconds", "Request latency by route", ["route"], registry=reg
        )
        self.degraded = Counter(
            "ig_degraded_total",
            "Responses served without the online store",
            ["route"],
            registry=reg,
        )
        self.stage_errors = Counter(
            "ig_stage_errors_total",
            "Recommend pipeline stages that failed and were skipped (fail-open)",
            ["stage"],
            registry=reg,
        )
        self.events_accepted = Counter(
            "ig_events_accepted_total", "Events written to the event stream", registry=reg
        )
        self.impressions_logged = Counter(
            "ig_impressions_logged_total",
            "Impressions (items shown by recommend/search) written to the event stream",
            registry=reg,
        )
        self.impressions_dropped = Counter(
            "ig_impressions_dropped_total",
            "Impressions dropped: the buffer was full while the event stream was unreachable",
            registry=reg,
        )
        self.impression_buffer = Gauge(
            "ig_impression_buffer", "Impressions waiting to be written", registry=reg
        )
        self.clicks = Counter(
            "ig_clicks_total",
            "Clicks received, by whether they named an answer that showed the item",
            ["attributed"],
            registry=reg,
        )
        self.encoder_refused = Counter(
            "ig_encoder_refused_total",
            "Requests refused before the text encoder: too much text (422) or busy (429)",
            ["reason"],
            registry=reg,
        )
        self.rate_limited = Counter(
            "ig_rate_limited_total",
            "Requests refused (429) by the per-client rate limit before their body was read",
            ["route"],
            registry=reg,
        )
        self.forgotten = Counter(
            "ig_users_forgotten_total", "Shoppers forgotten (DELETE /v1/users/{id})", registry=reg
        )
        self.model_info = Info("ig_model", "The serving model artifact", registry=reg)
        self.catalogue_version = Gauge(
            "ig_catalogue_version",
            "Version of the live catalogue laid over the serving model (PUT /v1/items)",
            registry=reg,
        )
        self.catalogue_items = Counter(
            "ig_catalogue_items_total", "Catalogue entries put through the API", registry=reg
        )
