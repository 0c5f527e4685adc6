"""The ranker over candidates, and the two routes built on it alone: score and search."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from api.bundle import NONE, Bundle
from api.features import (
    STORE_DOWN,
    Context,
    hydrate,
    live_vector,
    read_context,
)
from api.impressions import impression_events, new_request_id
from api.schemas import ItemScore, ScoreResponse, SearchHit, SearchResponse
from models.ranker_features import (
    GNN_SCORE,
    GRAPH_FILTER_SCORE,
    SEQUENCE_SCORE,
    pick,
    ranker_inputs,
)

if TYPE_CHECKING:
    from api.state import State

SEARCH = "search"  # the "policy" of a search answer's impressions: by score, no exploration


def rank_scores(
    bundle: Bundle,
    ctx: Context,
    features: dict[str, list[Any]],
    model_scores: dict[str, np.ndarray],
    idx: list[int | None],
) -> np.ndarray:
    """The served order's score [N]: the ranker's blend of its trees and the model scores
    (:meth:`models.ranker.Ranker.order_scores`) over :func:`models.ranker_features.ranker_inputs`
    (user side from ``ctx``, item side from ``features``: the same function training uses); the
    GNN score alone without a ranker. ``model_scores``: each model's score [N] by column;
    ``idx``: catalogue indices (None: not in the catalogue)."""
    ranker = bundle.ranker
    if ranker is None:
        return np.nan_to_num(model_scores[GNN_SCORE], nan=-1e9)
    cats = [bundle.categories[i] if i is not None else None for i in idx]
    x = ranker_inputs(ranker.columns, ctx.features, features, cats, model_scores)  # type: ignore[attr-defined]
    return ranker.order_scores(x)  # type: ignore[attr-defined,no-any-return]


def score_items(
    state: State, bundle: Bundle, user_id: str, refs: list[tuple[str, str | None]]
) -> ScoreResponse:
    """POST /v1/score: the ranker over a caller's own (item_id, title) list, in its order."""
    vectors, placed = bundle.place(refs, state.encoder)
    idx = [bundle.index.get(item_id) for item_id, _ in refs]
    degraded, features = False, None
    try:
        ctx = read_context(state, user_id)
        features = hydrate(state, [i for i, _ in refs])
    except STORE_DOWN as exc:
        state.store_lost(exc, "score")
        degraded, ctx = True, Context()
    vec = live_vector(state, bundle, user_id, ctx)
    gnn = vectors @ vec if vec is not None else np.full(len(refs), np.nan)
    gnn[np.array(placed) == NONE] = np.nan
    if features is None:  # no features: the GNN score alone (NaN -> lowest)
        scores = np.nan_to_num(gnn, nan=-1e9)
    else:
        known = np.array([-1 if i is None else i for i in idx], dtype=np.int64)
        model_scores = {
            GNN_SCORE: gnn,
            GRAPH_FILTER_SCORE: pick(bundle.filter_scores(user_id, ctx.recent_items), known),
            SEQUENCE_SCORE: pick(bundle.sequence_scores(ctx.recent_items), known),
        }
        scores = rank_scores(bundle, ctx, features, model_scores, idx)
    return ScoreResponse(
        user_id=user_id,
        degraded=degraded,
        model_version=bundle.version,
        scores=[
            ItemScore(item_id=i, score=round(float(s), 6), placed_by=p)
            for (i, _), s, p in zip(refs, scores, placed, strict=True)
        ],
    )


def search(
    state: State, bundle: Bundle, q: str, user_id: str | None, k: int, pool_size: int = 100
) -> SearchResponse:
    """GET /v1/search: cosine over title embeddings, then (with a user) the user's affinity,
    z-scored within the pool, adds ``IG_SEARCH_PERSONAL_WEIGHT`` per standard deviation."""
    qv = state.encoder.encode([q])[0]  # type: ignore[union-attr]
    sims = bundle.text @ qv  # type: ignore[operator]
    sims[~bundle.available] = -np.inf
    pool = np.argsort(-sims)[: max(pool_size, k)]
    final = sims[pool].copy()
    degraded, vec = False, None
    if user_id is not None:
        try:
            ctx = read_context(state, user_id)
        except STORE_DOWN as exc:
            state.store_lost(exc, "search")
            degraded, ctx = True, Context()
        vec = live_vector(state, bundle, user_id, ctx)
    if vec is not None:
        affinity = bundle.vectors[pool] @ vec
        z = (affinity - affinity.mean()) / (affinity.std() + 1e-9)
        final = final + state.settings.search_personal_weight * z
    hits = []
    for j in np.argsort(-final, kind="stable")[:k]:
        item_id, title, category = bundle.item(int(pool[j]))
        reason = f"matches “{q.strip()}”"
        if vec is not None and final[j] > sims[pool[j]]:
            reason += " and fits your interests"
        hits.append(
            SearchHit(
                item_id=item_id,
                title=title,
                category=category,
                score=round(float(final[j]), 6),
                text_similarity=round(float(sims[pool[j]]), 6),
                reason=reason,
            )
        )
    request_id = new_request_id()
    if user_id is not None and state.impressions is not None:  # who saw them: known users only
        shown = [(h.item_id, h.category, False, 1.0) for h in hits]
        state.impressions.add(impression_events(request_id, user_id, SEARCH, shown))
    return SearchResponse(
        request_id=request_id, query=q, user_id=user_id, degraded=degraded, items=hits
    )
