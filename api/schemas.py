"""Request and response models of the scoring API (they are its OpenAPI schema)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from core import names as n

# Ids: 1..128 printable characters, no surrounding whitespace.
Id = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=128,
        pattern=r"^[^\s\x00-\x1f\x7f]([^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$",
    ),
]
MAX_K = 100
MAX_BATCH = 1000


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    redis: bool
    feature_store: bool
    model: str | None = Field(description="Loaded artifact version (None: no model loaded).")


class Profile(BaseModel):
    user_id: str
    known: bool
    features: dict[str, Any]
    top_categories: list[str]
    recent_items: list[str]


class Forgotten(BaseModel):
    """What ``DELETE /v1/users/{user_id}`` removed (stream.forget.ForgetRecord)."""

    forget_id: str = Field(description="The record's id (data/forget/records.jsonl).")
    at: str
    seconds: float
    removed: dict[str, int] = Field(description="Counts removed, by place.")
    live_job: str = Field(
        description="none: no live job reads the stream; queued: it will "
        "drop the shopper's state when it reads the control event."
    )


class Recommendation(BaseModel):
    item_id: str
    title: str | None
    category: str | None
    score: float = Field(description="Ranker probability (or the retrieval score without one).")
    explored: bool = Field(description="Placed by the explore policy rather than by its score.")
    propensity: float = Field(
        description="The probability with which the policy put this item in this slot, given "
        "the slots before it (1.0: decided by score alone)."
    )
    sources: list[str] = Field(description="Candidate sources: gnn, popular, category, segment.")
    reason: str


class Recommendations(BaseModel):
    request_id: str = Field(
        description="Names this answer: send it with a click (POST /v1/events) so the click is "
        "attributed to the slot it came from."
    )
    user_id: str
    policy: str = Field(description="The explore/exploit policy that chose the items.")
    known: bool = Field(description="The user has a trained embedding or live history.")
    degraded: bool = Field(description="Redis was unreachable: popularity fallback served.")
    model_version: str | None
    explore_share: float = Field(description="Share of the slots the explore policy could fill.")
    items: list[Recommendation]
    stages_ms: dict[str, float]


class ItemRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: Id
    title: Annotated[str, StringConstraints(max_length=512)] | None = Field(
        None, description="Used to place an item the model has never seen (by its text)."
    )


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Id
    items: list[ItemRef | Id] = Field(min_length=1, max_length=500)


class ItemScore(BaseModel):
    item_id: str
    score: float
    placed_by: str = Field(description="graph, text (cold item) or none (unknown, no title).")


class ScoreResponse(BaseModel):
    user_id: str
    degraded: bool
    model_version: str | None
    scores: list[ItemScore]


class SearchHit(BaseModel):
    item_id: str
    title: str | None
    category: str | None
    score: float
    text_similarity: float
    reason: str


class SearchResponse(BaseModel):
    request_id: str = Field(description="Names this answer (see Recommendations.request_id).")
    query: str
    user_id: str | None
    degraded: bool
    items: list[SearchHit]


class SimilarItem(BaseModel):
    item_id: str
    title: str | None
    category: str | None
    similarity: float


class SimilarResponse(BaseModel):
    item_id: str
    placed_by: str = Field(description="graph (trained embedding) or text (cold item).")
    items: list[SimilarItem]


class EventIn(BaseModel):
    """One behaviour event; the live dataflow validates it again (its dead letters say why)."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)
    user_id: Id
    item_id: Id
    event_type: n.EventType
    event_timestamp: datetime | None = Field(
        None,
        description="ISO-8601 with a UTC offset (``Z`` or ``+01:00``); a time without one is "
        "refused. At most IG_FUTURE_TOLERANCE_S ahead of the server clock. Default: now.",
    )
    value: float = 1.0
    session_id: Id | None = None
    category_id: Id | None = None
    request_id: Id | None = Field(
        None,
        description="The request_id of the recommend/search answer the item was shown in: the "
        "event is attributed to that impression (its position, policy and propensity).",
    )

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("value must be a finite number")
        return v

    @field_validator("event_timestamp")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        if v.tzinfo is None or v.utcoffset() is None:
            raise ValueError(
                "event_timestamp has no UTC offset: send e.g. 2024-05-01T12:00:00Z or "
                "2024-05-01T13:00:00+01:00 (a naive time is never guessed)"
            )
        if not datetime(1970, 1, 2, tzinfo=UTC) <= v <= datetime(2200, 1, 1, tzinfo=UTC):
            raise ValueError("event_timestamp out of range (1970..2200)")
        return v

    def canonical(self) -> dict[str, Any]:
        event = self.model_dump()
        event[n.EVENT_TIMESTAMP] = (self.event_timestamp or datetime.now(UTC)).isoformat()
        return event


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class EventsAccepted(BaseModel):
    accepted: int
    stream: str
    ids: list[str]


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,128}$")] | None = Field(
        None, description="Artifact folder name (default: latest)."
    )


class ReloadResponse(BaseModel):
    version: str
    previous: str | None


class CatalogueItem(BaseModel):
    item_id: str
    title: str | None
    category: str | None
    popularity: float = Field(description="Distinct shoppers of the item in training.")
    brand: str | None = None


Text = Annotated[str, StringConstraints(min_length=1, max_length=1000, strip_whitespace=True)]


class ItemIn(BaseModel):
    """An item as the shop describes it (``PUT /v1/items/{item_id}``). A field left out keeps
    what the catalogue has (for a new item: none); ``available`` false takes it off every
    answer from the next request."""

    model_config = ConfigDict(extra="forbid")
    title: Text | None = Field(None, description="Embedded at once: search, similar, retrieval.")
    category: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    brand: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    available: bool = True


class ItemInBatch(ItemIn):
    item_id: Id


class ItemBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ItemInBatch] = Field(min_length=1, max_length=MAX_BATCH)


class ItemPlaced(BaseModel):
    item_id: str
    placed_by: str = Field(description="graph (trained), text (its title) or none (no title).")
    available: bool


class ItemsPut(BaseModel):
    catalogue_version: int = Field(description="The live catalogue's version after the write.")
    model_version: str
    items: list[ItemPlaced]


class CataloguePage(BaseModel):
    category: str | None
    total: int = Field(description="Available items (in ``category`` when given).")
    offset: int
    items: list[CatalogueItem]


class CategoryCount(BaseModel):
    category: str
    items: int


class Shopper(BaseModel):
    user_id: str
    history: int = Field(description="Items the shopper bought or rated in training.")


class StreamStatus(BaseModel):
    """How far the live job (consumer group) is behind the event stream."""

    stream: str
    group: str
    consumers: int = Field(description="Live-job consumers registered in the group.")
    job_seen_s: float | None = Field(
        description="Seconds since the live job last polled the stream, caught up with its "
        "history (None: never)."
    )
    lag: int = Field(description="Entries not yet delivered to the live job.")
    pending: int = Field(description="Entries delivered and not yet written (unacknowledged).")
    behind_s: float = Field(
        description="Age of the oldest entry the live job has not yet turned into features "
        "(0: every entry is in the online store): how stale the features can be."
    )
    last_event_age_s: float | None = Field(
        description="Seconds since the newest entry was added to the stream (None: empty)."
    )
