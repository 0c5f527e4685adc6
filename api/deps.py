"""FastAPI dependencies and parameter types shared by the routers."""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Path, Query, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import SecretStr

from api.bundle import Bundle
from api.schemas import MAX_K
from api.state import State


def get_state(request: Request) -> State:
    return request.app.state.ig


def get_bundle(request: Request) -> Bundle:
    bundle = request.app.state.ig.bundle
    if bundle is None:
        raise HTTPException(503, "no model loaded: run `make train`, then POST /v1/admin/reload")
    return bundle


api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def _matches(key: str | None, accepted: list[SecretStr]) -> bool:
    """``key`` equals one of ``accepted`` (each compared in constant time)."""
    given = (key or "").encode()
    return key is not None and any(
        hmac.compare_digest(given, a.get_secret_value().encode()) for a in accepted
    )


def require_key(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> None:
    """Writes and admin calls need ``X-API-Key`` equal to ``IG_API_KEY``."""
    expected = request.app.state.ig.settings.api_key
    if expected is None:
        raise HTTPException(403, "writes are disabled: set IG_API_KEY on the server")
    if not _matches(key, [expected]):
        raise HTTPException(401, "missing or wrong X-API-Key")


def require_read_key(
    request: Request, key: Annotated[str | None, Security(api_key_header)]
) -> None:
    """Reads that expose a shopper need ``X-API-Key``: the read key (``IG_READ_KEY``) or the
    admin key."""
    s = request.app.state.ig.settings
    accepted = [k for k in (s.read_key, s.api_key) if k is not None]
    if not accepted:
        raise HTTPException(403, "shopper reads are disabled: set IG_READ_KEY on the server")
    if not _matches(key, accepted):
        raise HTTPException(401, "missing or wrong X-API-Key (this read needs the read key)")


def require_read_key_if_set(
    request: Request, key: Annotated[str | None, Security(api_key_header)]
) -> None:
    """Recommend and personal search: open unless ``IG_RECOMMEND_NEEDS_KEY``."""
    if request.app.state.ig.settings.recommend_needs_key:
        require_read_key(request, key)


StateDep = Annotated[State, Depends(get_state)]
BundleDep = Annotated[Bundle, Depends(get_bundle)]


def personal_search_key(
    request: Request, key: Annotated[str | None, Security(api_key_header)]
) -> None:
    """Search with a ``user_id`` is personal: guarded like recommend."""
    if "user_id" in request.query_params:
        require_read_key_if_set(request, key)


WriteKey = Depends(require_key)
ReadKey = Depends(require_read_key)
RecommendKey = Depends(require_read_key_if_set)
SearchKey = Depends(personal_search_key)
UserPath = Annotated[str, Path(min_length=1, max_length=128)]
ItemPath = Annotated[str, Path(min_length=1, max_length=128)]
K = Annotated[int, Query(ge=1, le=MAX_K, description=f"How many items (1..{MAX_K}).")]
Explore = Annotated[
    str,
    Query(
        pattern=r"^(auto|off|0(\.\d{1,4})?|1(\.0{1,4})?)$",
        description="auto: by history length; off; or a share 0..1 (capped at the policy's max).",
    ),
]
Policy = Annotated[
    Literal["greedy", "epsilon_greedy", "thompson", "contextual"] | None,
    Query(
        description="Explore/exploit policy (default: IG_POLICY). models.explore says how each "
        "explores; every answer logs each slot's propensity under it."
    ),
]
Device = Annotated[
    Literal["desktop", "mobile", "tablet"] | None,
    Query(
        description="The shopper's device, when the client knows it (context of the "
        "contextual policy)."
    ),
]
