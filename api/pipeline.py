"""The recommend pipeline, one function per stage:

context (the user's live profile, 1 row) -> candidates -> hydrate (one batched Feast online read)
-> score (ranker) -> explore (Thompson sampling) -> filter -> explain.

Each stage is timed into the response's ``stages_ms``. A lost Redis at any stage turns the
request into the popularity fallback with ``degraded: true``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import redis

from api.bundle import NONE, TEXT, Bundle
from api.schemas import (
    ItemScore,
    Recommendation,
    Recommendations,
    ScoreResponse,
    SearchHit,
    SearchResponse,
)
from core import names as n
from core.windows import add_read_time_columns
from models.explore import ExploreConfig, blend, explore_share, explore_slots
from models.ranker import (
    CATEGORY_AFFINITY,
    GNN_SCORE,
    TOP_CATEGORIES,
    TOP_CATEGORY_SCORES,
    category_affinity,
)

if TYPE_CHECKING:
    from api.state import State

# Errors that mean "the online store is unreachable", not "the request is wrong".
STORE_DOWN = (redis.RedisError, ConnectionError, TimeoutError, OSError)
GNN, POPULAR, CATEGORY, SEGMENT = "gnn", "popular", "category", "segment"
IMPRESSIONS_7D = n.full_name(n.ITEM_STATS, n.count_feature(n.EventType.IMPRESSION, "7d"))
CLICKS_7D = n.full_name(n.ITEM_STATS, n.count_feature(n.EventType.CLICK, "7d"))
EVENTS_TOTAL = n.full_name(n.USER_BEHAVIOR, n.EVENTS_TOTAL)
RECENT_ITEMS = n.full_name(n.USER_INTEREST, n.RECENT_ITEMS)


@dataclass
class Context:
    """What the stream knows about the user now (FeatureService profile_v1: every user-side
    feature of ranker_v1 too)."""

    features: dict[str, Any] = field(default_factory=dict)  # view__feature -> value

    @property
    def events_total(self) -> int:
        return int(self.features.get(EVENTS_TOTAL) or 0)

    @property
    def top_categories(self) -> list[str]:
        return list(self.features.get(TOP_CATEGORIES) or [])

    @property
    def recent_items(self) -> list[str]:
        return list(self.features.get(RECENT_ITEMS) or [])


@dataclass
class Candidates:
    rows: np.ndarray  # [N] catalogue rows
    sources: list[list[str]]  # [N] which generators proposed each


class Timer:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round((time.perf_counter() - started) * 1000, 3)


def live_vector(state: State, bundle: Bundle, user_id: str, ctx: Context) -> np.ndarray | None:
    """The user's vector now: trained embedding moved by the recent items in ``ctx``."""
    return bundle.user_vector(user_id, ctx.recent_items, state.settings.live_interest_weight)


def read_context(state: State, user_id: str) -> Context:
    online = state.store.get_online_features(
        features=state.profile_service, entity_rows=[{n.USER_ID: user_id}], full_feature_names=True
    ).to_dict()
    add_read_time_columns(online, time.time_ns() // 1000)  # windowed counts as of now
    return Context({k: v[0] for k, v in online.items() if k != n.USER_ID})


def candidates(
    bundle: Bundle,
    user_id: str,
    vec: np.ndarray | None,
    ctx: Context,
    n_gnn: int,
    n_other: int,
) -> Candidates:
    """GNN retrieval (user vector x item space) + popular + the user's top categories.

    Without a user vector (a new shopper): popular items spread across categories."""
    sources: dict[int, list[str]] = {}

    def add(rows: Any, source: str) -> None:
        for r in rows:
            sources.setdefault(int(r), []).append(source)

    if vec is not None:
        add(bundle.retrieve(vec, n_gnn)[0], GNN)
        add(bundle.popular[:n_other], POPULAR)
    else:  # a new shopper: their demographic segments (when known), popular across categories
        segs = bundle.user_segments.get(user_id, [])
        for seg in segs:
            add(bundle.segments[seg][: max(2, n_other // len(segs))], SEGMENT)
        add(bundle.diverse_popular(n_other, ctx.top_categories), POPULAR)
    per_cat = max(2, n_other // max(len(ctx.top_categories), 1))
    for cat in ctx.top_categories:
        add(bundle.by_category.get(cat, np.zeros(0, np.int64))[:per_cat], CATEGORY)
    rows = np.fromiter(sources, dtype=np.int64, count=len(sources))
    return Candidates(rows, [sources[int(r)] for r in rows])


def hydrate(state: State, item_ids: list[str]) -> dict[str, list[Any]]:
    """The item side of ranker_v1 for every candidate: ONE batched Feast online read for the
    items not read in the last ``IG_ITEM_FEATURE_TTL_S`` seconds (the rest come from the
    in-process cache). The user side is the context read: the same user for every row.
    Windowed counts are computed from the stored buckets at the moment of the call."""
    cache = state.item_cache
    rows = cache.get_many(item_ids)
    missing = [i for i, row in zip(item_ids, rows, strict=True) if row is None]
    if missing:
        online = state.store.get_online_features(
            features=state.ranker_item_refs,
            entity_rows=[{n.ITEM_ID: i} for i in missing],
            full_feature_names=True,
        ).to_dict()
        online.pop(n.ITEM_ID, None)
        fresh = [
            dict(zip(online, values, strict=True)) for values in zip(*online.values(), strict=True)
        ]
        cache.put_many(missing, fresh)
        got = dict(zip(missing, fresh, strict=True))
        rows = [row if row is not None else got[i] for i, row in zip(item_ids, rows, strict=True)]
    columns = {col: [row[col] for row in rows] for col in state.ranker_item_columns}
    return add_read_time_columns(columns, time.time_ns() // 1000)  # counts as of now


class ItemFeatureCache:
    """Item features by item id for ``ttl_s`` seconds (0: off). Item counts move slowly next to
    request rates, so popular candidates are read from Redis about once per ``ttl_s``."""

    def __init__(self, ttl_s: float, max_items: int = 200_000) -> None:
        self.ttl_s, self.max_items = ttl_s, max_items
        self._rows: dict[str, tuple[float, dict[str, Any]]] = {}

    def get_many(self, item_ids: list[str]) -> list[dict[str, Any] | None]:
        if self.ttl_s <= 0:
            return [None] * len(item_ids)
        now = time.monotonic()
        out: list[dict[str, Any] | None] = []
        for i in item_ids:
            hit = self._rows.get(i)
            out.append(hit[1] if hit is not None and now - hit[0] < self.ttl_s else None)
        return out

    def put_many(self, item_ids: list[str], rows: list[dict[str, Any]]) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._rows) + len(item_ids) > self.max_items:
            self._rows.clear()  # bounded memory; the next reads refill it
        now = time.monotonic()
        self._rows.update({i: (now, row) for i, row in zip(item_ids, rows, strict=True)})


def score(
    bundle: Bundle,
    ctx: Context,
    items: dict[str, list[Any]],
    gnn_scores: np.ndarray,
    rows: list[int | None],
) -> np.ndarray:
    """Ranker probability [N] over ranker_v1 (user side from ``ctx``, item side from
    ``items``), the category affinity and the GNN score; the GNN score alone without a ranker.
    ``rows``: catalogue rows (None: not in the catalogue)."""
    ranker = bundle.ranker
    if ranker is None:
        return np.nan_to_num(gnn_scores, nan=-1e9)
    size = len(gnn_scores)
    cats = [bundle.categories[r] if r is not None else None for r in rows]
    x = np.empty((size, len(ranker.columns)))  # type: ignore[attr-defined]
    for j, col in enumerate(ranker.columns):  # type: ignore[attr-defined]
        if col == GNN_SCORE:
            x[:, j] = gnn_scores
        elif col == CATEGORY_AFFINITY:
            tops = ctx.features.get(TOP_CATEGORIES)
            weights = ctx.features.get(TOP_CATEGORY_SCORES)
            x[:, j] = category_affinity([tops] * size, [weights] * size, cats)
        elif col in items:
            x[:, j] = [np.nan if v is None else v for v in items[col]]
        else:
            value = ctx.features.get(col)
            x[:, j] = np.nan if value is None else value
    return ranker.predict_matrix(x)  # type: ignore[attr-defined,no-any-return]


def explore(
    ranked: np.ndarray,
    items: dict[str, list[Any]],
    k: int,
    share: float,
    cfg: ExploreConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Thompson sampling over the items' online impressions/clicks (order, explored)."""
    imp = _column(items, IMPRESSIONS_7D, len(ranked))[ranked]
    clk = _column(items, CLICKS_7D, len(ranked))[ranked]
    return blend(ranked, imp, clk, k, explore_slots(k, share, cfg), rng)


def filter_rows(bundle: Bundle, rows: np.ndarray, user_id: str, ctx: Context) -> np.ndarray:
    """Mask [N]: drop what the user bought/rated in training or touched recently (online),
    and anything the catalogue marks unavailable."""
    drop = set(bundle.seen_rows(user_id).tolist())
    drop.update(bundle.index[i] for i in ctx.recent_items if i in bundle.index)
    mask = np.array([r not in drop for r in rows.tolist()], dtype=bool)
    return mask & bundle.available[rows]


def explain(
    bundle: Bundle,
    row: int,
    sources: list[str],
    explored: bool,
    anchors: np.ndarray,
    top_categories: list[str],
    segment: tuple[str, str] | None = None,
) -> str:
    """One plain-words reason for one item."""
    _, _, category = bundle.item(row)
    if explored:
        return "new for you: exploring beyond your usual picks"
    if GNN in sources and bundle.placed_by[row] == TEXT:
        return "new in the catalogue, matched to your interests by its description"
    if GNN in sources and len(anchors):
        sims = bundle.unit_vectors[anchors] @ bundle.unit_vectors[row]
        _, title, _ = bundle.item(int(anchors[int(np.argmax(sims))]))
        if title:
            return f"because you interacted with “{title}”"
    if CATEGORY in sources and category:
        return f"popular in {category}, one of your top categories"
    if SEGMENT in sources and segment is not None:
        return f"popular with shoppers who share your {segment[0]} ({segment[1]})"
    if category and category in top_categories:
        return f"popular in {category}"
    return "popular right now"


def recommend(state: State, user_id: str, k: int, explore_param: str) -> Recommendations:
    bundle = state.bundle  # one reference: a reload mid-request does not mix two models
    t = Timer()
    try:
        with t.stage("context"):
            ctx = read_context(state, user_id)
        vec = live_vector(state, bundle, user_id, ctx)
        with t.stage("candidates"):
            cands = candidates(
                bundle,
                user_id,
                vec,
                ctx,
                state.settings.candidates_gnn,
                state.settings.candidates_other,
            )
            ids = [bundle.ids[r] for r in cands.rows]
        with t.stage("hydrate"):
            features = hydrate(state, ids)
    except STORE_DOWN as exc:
        state.store_lost(exc, "recommend")
        return fallback(bundle, user_id, k, t)
    with t.stage("score"):
        gnn = bundle.vectors[cands.rows] @ vec if vec is not None else np.full(len(ids), np.nan)
        scores = score(bundle, ctx, features, gnn, cands.rows.tolist())
        ranked = np.argsort(-scores, kind="stable")
    known = user_id in bundle.users or ctx.events_total > 0
    history_len = max(ctx.events_total, len(bundle.seen_rows(user_id)))  # online or trained
    share = resolve_share(explore_param, history_len, state.explore_cfg)
    with t.stage("explore"):
        order, explored = explore(ranked, features, k, share, state.explore_cfg, state.rng)
        order = ranked[order]
    with t.stage("filter"):
        mask = filter_rows(bundle, cands.rows[order], user_id, ctx)
        order, explored = order[mask][:k], explored[mask][:k]
    with t.stage("explain"):
        anchors = _anchors(bundle, user_id, ctx)
        items = []
        for j, ex in zip(order.tolist(), explored.tolist(), strict=True):
            row = int(cands.rows[j])
            item_id, title, category = bundle.item(row)
            segment = bundle.segment_of(user_id, row) if SEGMENT in cands.sources[j] else None
            reason = explain(
                bundle, row, cands.sources[j], ex, anchors, ctx.top_categories, segment
            )
            items.append(
                Recommendation(
                    item_id=item_id,
                    title=title,
                    category=category,
                    score=round(float(scores[j]), 6),
                    explored=ex,
                    sources=cands.sources[j],
                    reason=reason,
                )
            )
    return Recommendations(
        user_id=user_id,
        known=known,
        degraded=False,
        model_version=bundle.version,
        explore_share=round(share, 4),
        items=items,
        stages_ms=t.stages,
    )


def resolve_share(param: str, history_len: float, cfg: ExploreConfig) -> float:
    """``auto`` adapts to the history; ``off`` is 0; a number is taken as is (then bounded)."""
    if param == "auto":
        return explore_share(history_len, cfg)
    if param == "off":
        return 0.0
    return min(float(param), cfg.max_share)


def fallback(bundle: Bundle, user_id: str, k: int, t: Timer) -> Recommendations:
    """Redis unreachable: popular items across categories, minus what the user bought."""
    with t.stage("fallback"):
        seen = set(bundle.seen_rows(user_id).tolist())
        rows = [r for r in bundle.diverse_popular(k + len(seen)) if r not in seen][:k]
        top = float(bundle.popularity.max()) or 1.0
        items = []
        for row in rows:
            item_id, title, category = bundle.item(row)
            items.append(
                Recommendation(
                    item_id=item_id,
                    title=title,
                    category=category,
                    score=round(float(bundle.popularity[row]) / top, 6),
                    explored=False,
                    sources=[POPULAR],
                    reason=f"popular in {category}" if category else "popular right now",
                )
            )
    return Recommendations(
        user_id=user_id,
        known=user_id in bundle.users,
        degraded=True,
        model_version=bundle.version,
        explore_share=0.0,
        items=items,
        stages_ms=t.stages,
    )


def _anchors(bundle: Bundle, user_id: str, ctx: Context, limit: int = 50) -> np.ndarray:
    """Items a reason may point at: recent ones (online) first, else the training history."""
    rows = [bundle.index[i] for i in ctx.recent_items if i in bundle.index]
    rows = [r for r in rows if bundle.placed_by[r] != NONE]
    if not rows:
        rows = bundle.seen_rows(user_id)[:limit].tolist()
    return np.array(rows[:limit], dtype=np.int64)


def _column(items: dict[str, list[Any]], col: str, size: int) -> np.ndarray:
    if col not in items:
        return np.zeros(size)
    return np.array([0.0 if v is None else v for v in items[col]], dtype=np.float64)


def score_items(
    state: State, bundle: Bundle, user_id: str, refs: list[tuple[str, str | None]]
) -> ScoreResponse:
    """POST /v1/score: the ranker over a caller's own (item_id, title) list, in its order."""
    vectors, placed = bundle.place(refs, state.encoder)
    rows = [bundle.index.get(item_id) for item_id, _ in refs]
    degraded, items = False, None
    try:
        ctx = read_context(state, user_id)
        items = hydrate(state, [i for i, _ in refs])
    except STORE_DOWN as exc:
        state.store_lost(exc, "score")
        degraded, ctx = True, Context()
    vec = live_vector(state, bundle, user_id, ctx)
    gnn = vectors @ vec if vec is not None else np.full(len(refs), np.nan)
    gnn[np.array(placed) == NONE] = np.nan
    if items is None:  # no features: the GNN score alone (NaN -> lowest)
        scores = np.nan_to_num(gnn, nan=-1e9)
    else:
        scores = score(bundle, ctx, items, gnn, rows)
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
    return SearchResponse(query=q, user_id=user_id, degraded=degraded, items=hits)
