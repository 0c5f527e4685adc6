"""Recommendations: ``/v1/recommend``, ``/v1/score``, ``/v1/search``.

Routes that call Feast's synchronous SDK or torch are plain ``def`` (they run in the thread
pool)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.deps import (
    BundleDep,
    Device,
    Explore,
    K,
    Policy,
    RecommendKey,
    SearchKey,
    StateDep,
    UserPath,
)
from api.recommend import recommend as run_recommend
from api.schemas import Recommendations, ScoreRequest, ScoreResponse, SearchResponse
from api.scoring import score_items
from api.scoring import search as run_search

router = APIRouter(prefix="/v1", tags=["recommend"])


@router.get("/recommend/{user_id}", response_model=Recommendations, dependencies=[RecommendKey])
def recommend(
    state: StateDep,
    bundle: BundleDep,
    user_id: UserPath,
    k: K = 20,
    explore: Explore = "auto",
    policy: Policy = None,
    device: Device = None,
) -> Recommendations:
    """Ranked items with scores and reasons: query → candidates → filter → hydrate → score →
    select → decorate. Unknown users get the cold-start path; Redis down → popularity with
    ``degraded: true``. What is shown is logged as impressions under ``request_id``."""
    return run_recommend(state, user_id, k, explore, policy, device)


@router.post("/score", response_model=ScoreResponse)
def score(state: StateDep, bundle: BundleDep, body: ScoreRequest) -> ScoreResponse:
    """Scores for a caller's own candidates. An item the model has never seen is placed by
    its ``title`` (text projection); without one it is scored on features alone."""
    refs = [(r, None) if isinstance(r, str) else (r.item_id, r.title) for r in body.items]
    return score_items(state, bundle, body.user_id, refs)


@router.get("/search", response_model=SearchResponse, dependencies=[SearchKey])
def search(
    state: StateDep,
    bundle: BundleDep,
    q: Annotated[str, Query(min_length=1, max_length=256, description="Free text.")],
    user_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    k: K = 20,
) -> SearchResponse:
    """Semantic search over item titles (MiniLM); re-ranked by the user's interests when a
    ``user_id`` is given."""
    if bundle.text is None or state.encoder is None:
        raise HTTPException(503, "this model artifact has no text index")
    if not q.strip():
        raise HTTPException(422, "q must contain non-blank text")
    return run_search(state, bundle, q, user_id, k)
