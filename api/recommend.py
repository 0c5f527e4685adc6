"""The recommend pipeline, written as data (the shape of X's home-mixer):

    query hydrators -> candidate sources -> filters -> hydrate -> score -> select -> decorate
    -> side effects

Each stage is a small named unit with a failure policy: ``FALLBACK`` (the online store is
needed: answer with popular items and ``degraded: true``) or ``OPEN`` (skip the unit and go on,
counted in ``ig_stage_errors_total``). Each stage group is timed into ``stages_ms``. Filters
are cheap and run before hydrate and score, so neither is spent on items never shown.

Names here: ``idx`` is an item's index in the serving catalogue (api.bundle), ``features`` a
dict of feature columns, ``score`` the ranker's probability for one candidate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from api.bundle import NONE, TEXT, Bundle
from api.features import (
    STORE_DOWN,
    Context,
    feedback_now,
    hydrate,
    linear_now,
    live_vector,
    read_context,
)
from api.impressions import impression_events, new_request_id
from api.schemas import Recommendation, Recommendations
from api.scoring import rank_scores
from models.explore import (
    CONTEXTUAL,
    POLICIES,
    ExploreConfig,
    choose,
    context_vectors,
    explore_share,
    slot_probs,
)
from models.ranker_features import GNN_SCORE, GRAPH_FILTER_SCORE, SEQUENCE_SCORE, pick

if TYPE_CHECKING:
    from api.state import State

log = logging.getLogger(__name__)
GNN, POPULAR, CATEGORY, SEGMENT = "gnn", "popular", "category", "segment"
GRAPH_FILTER, SEQUENCE = "graph_filter", "sequence"
FALLBACK_POLICY = "popular_fallback"  # what a degraded answer logs as its policy
OPEN, FALLBACK = "open", "fallback"


@dataclass
class Query:
    """The request and what the query hydrators learn about the user."""

    user_id: str
    k: int
    explore: str
    policy: str
    bundle: Bundle
    request_id: str = field(default_factory=new_request_id)
    device: str | None = None
    ctx: Context = field(default_factory=Context)
    vec: np.ndarray | None = None  # [D] the user's live vector (None: nothing known)
    filtered: np.ndarray | None = None  # [C] the graph filter's scores (None: no filter)
    sequenced: np.ndarray | None = None  # [C] the sequence model's (None: no model or items)
    history: float = 0.0  # events known of the user (online, or bought in training)
    share: float = 0.0


@dataclass
class Candidates:
    """Candidates [N] and what the stages add to them, all aligned with ``idx``."""

    idx: np.ndarray  # [N] catalogue indices
    sources: list[list[str]]  # [N] which sources proposed each
    features: dict[str, list[Any]] = field(default_factory=dict)  # hydrated item columns
    scores: np.ndarray | None = None  # [N]
    order: np.ndarray | None = None  # selected positions into idx, best first (k at most)
    explored: np.ndarray | None = None  # [len(order)] bool
    propensity: np.ndarray | None = None  # [len(order)] the policy's probability of each slot
    context: np.ndarray | None = None  # [len(order), CONTEXT_DIM] each slot's context features
    # rng -> {policy: [len(order)]}: each policy's probability of each slot (see counterfactual)
    counterfactual: Callable[[np.random.Generator], dict[str, list[float]]] | None = None
    reasons: list[str] = field(default_factory=list)  # [len(order)]


@dataclass(frozen=True)
class Unit:
    """One named unit of a stage, what its failure means, and (for a stage that fails open)
    what it leaves in its place."""

    name: str
    run: Callable[..., Any]
    on_error: str = OPEN
    skipped: Callable[[Query, Candidates], None] | None = None


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


class Degraded(Exception):
    """A ``FALLBACK`` unit lost the online store: answer without it."""


# -- query hydrators ------------------------------------------------------------------------
def user_context(state: State, q: Query) -> None:
    q.ctx = read_context(state, q.user_id)


def user_vector(state: State, q: Query) -> None:
    q.vec = live_vector(state, q.bundle, q.user_id, q.ctx)


def graph_filter_scores(state: State, q: Query) -> None:
    q.filtered = q.bundle.filter_scores(q.user_id, q.ctx.recent_items)


def sequence_scores(state: State, q: Query) -> None:
    q.sequenced = q.bundle.sequence_scores(q.ctx.recent_items)


def exploration_share(state: State, q: Query) -> None:
    q.history = max(q.ctx.events_total, len(q.bundle.seen_idx(q.user_id)))
    q.share = resolve_share(q.explore, q.history, state.explore_cfg)


# -- candidate sources: each returns catalogue indices ----------------------------------------
def gnn_source(state: State, q: Query) -> np.ndarray:
    """The user's nearest items in the GNN space."""
    if q.vec is None:
        return np.zeros(0, np.int64)
    return q.bundle.retrieve(q.vec, state.settings.candidates_gnn)[0]


def graph_filter_source(state: State, q: Query) -> np.ndarray:
    """The items the graph filter relates most to the user's bought and recent items."""
    if q.filtered is None:
        return np.zeros(0, np.int64)
    return q.bundle.retrieve_filtered(q.filtered, state.settings.candidates_graph_filter)


def sequence_source(state: State, q: Query) -> np.ndarray:
    """The items the sequence model expects next after the user's recent items."""
    if q.sequenced is None:
        return np.zeros(0, np.int64)
    return q.bundle.retrieve_sequenced(q.sequenced, state.settings.candidates_sequence)


def segment_source(state: State, q: Query) -> list[int]:
    """A new shopper with known demographics: their segments' favourites."""
    if q.vec is not None:
        return []
    segs = q.bundle.user_segments.get(q.user_id, [])
    per = max(2, state.settings.candidates_other // max(len(segs), 1))
    return [int(i) for seg in segs for i in q.bundle.segments[seg][:per]]


def popular_source(state: State, q: Query) -> np.ndarray | list[int]:
    """Popular items; for a new shopper spread across categories (theirs first)."""
    count = state.settings.candidates_other
    if q.vec is not None:
        return q.bundle.popular[:count]
    return q.bundle.diverse_popular(count, q.ctx.top_categories)


def category_source(state: State, q: Query) -> list[int]:
    """Popular items of the user's top categories (online)."""
    tops = q.ctx.top_categories
    per = max(2, state.settings.candidates_other // max(len(tops), 1))
    empty = np.zeros(0, np.int64)
    return [int(i) for cat in tops for i in q.bundle.by_category.get(cat, empty)[:per]]


# -- filters: each returns a keep-mask [N] -------------------------------------------------
def filter_seen(state: State | None, q: Query, idx: np.ndarray) -> np.ndarray:
    """Drop what the user bought/rated in training or touched recently (online)."""
    drop = set(q.bundle.seen_idx(q.user_id).tolist())
    drop.update(q.bundle.index[i] for i in q.ctx.recent_items if i in q.bundle.index)
    return np.array([i not in drop for i in idx.tolist()], dtype=bool)


def filter_unavailable(state: State | None, q: Query, idx: np.ndarray) -> np.ndarray:
    """Drop what the catalogue marks unavailable."""
    return q.bundle.available[idx]


# -- hydrate, score, select, decorate ------------------------------------------------------
def hydrate_features(state: State, q: Query, c: Candidates) -> None:
    c.features = hydrate(state, [q.bundle.ids[i] for i in c.idx])


def ranker_score(state: State, q: Query, c: Candidates) -> None:
    scores = {
        GNN_SCORE: q.bundle.gnn_scores(q.vec, c.idx),
        GRAPH_FILTER_SCORE: pick(q.filtered, c.idx),
        SEQUENCE_SCORE: pick(q.sequenced, c.idx),
    }
    c.scores = rank_scores(q.bundle, q.ctx, c.features, scores, c.idx.tolist())


def explore_and_take_k(state: State, q: Query, c: Candidates) -> None:
    """The policy's k slots over the ranked candidates (only those the filters kept), from
    their item_feedback (examination-weighted impressions and clicks, and the contextual sums,
    decayed to now) and the request's context."""
    ranked = np.argsort(-c.scores, kind="stable")  # type: ignore[operator]
    size, half_life_s = len(c.idx), state.settings.feedback_half_life_hours * 3600
    examined, clicked = feedback_now(c.features, size, half_life_s)
    feedback = (examined[ranked], clicked[ranked])
    tops = set(q.ctx.top_categories)
    match = np.array([q.bundle.categories[i] in tops for i in c.idx.tolist()], dtype=float)
    hour = (state.clock_us() / 1e6 % 86_400) / 3600  # UTC
    x = context_vectors(q.history, match, hour, q.device)[ranked]

    def linear() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        gram, clicks_x = linear_now(c.features, size, half_life_s)
        return x, gram[ranked], clicks_x[ranked]

    cfg, share = state.explore_cfg, q.share
    slate = choose(
        q.policy,
        size,
        q.k,
        share,
        cfg,
        state.rng,
        feedback,
        linear() if q.policy == CONTEXTUAL else None,
    )
    c.order, c.explored, c.propensity = ranked[slate.order], slate.explored, slate.propensity
    c.context = x[slate.order]

    def counterfactual(rng: np.random.Generator) -> dict[str, list[float]]:
        """Every policy's probability of each slot as served (for off-policy evaluation);
        run by the impression log's thread, off the request's path. The serving policy's is
        its logged propensity (slot_probs would recompute the same); the contextual policy's
        sums are decoded only here."""
        out = {q.policy: np.round(slate.propensity, 6).tolist()}
        for p in POLICIES:
            if p not in out:
                lin = linear() if p == CONTEXTUAL else None
                probs = slot_probs(p, slate.order, size, q.k, share, cfg, rng, feedback, lin)
                out[p] = np.round(probs, 6).tolist()
        return out

    c.counterfactual = counterfactual


def reasons(state: State, q: Query, c: Candidates) -> None:
    anchors = _anchors(q.bundle, q.user_id, q.ctx)
    c.reasons = []
    for j, ex in zip(c.order.tolist(), c.explored.tolist(), strict=True):  # type: ignore[union-attr]
        ix = int(c.idx[j])
        segment = q.bundle.segment_of(q.user_id, ix) if SEGMENT in c.sources[j] else None
        c.reasons.append(
            explain(q.bundle, ix, c.sources[j], ex, anchors, q.ctx.top_categories, segment)
        )


# -- what a stage that failed open leaves in its place ------------------------------------
def score_in_candidate_order(q: Query, c: Candidates) -> None:
    c.scores = -np.arange(len(c.idx), dtype=np.float64)


def take_k_unexplored(q: Query, c: Candidates) -> None:
    c.order = np.argsort(-c.scores, kind="stable")[: q.k]  # type: ignore[operator]
    c.explored = np.zeros(len(c.order), dtype=bool)
    c.propensity = np.ones(len(c.order))


def plain_reasons(q: Query, c: Candidates) -> None:
    c.reasons = ["popular right now"] * len(c.order)  # type: ignore[arg-type]


QUERY_HYDRATORS = (
    Unit("context", user_context, FALLBACK),
    Unit("interest", user_vector),
    Unit(GRAPH_FILTER, graph_filter_scores),
    Unit(SEQUENCE, sequence_scores),
    Unit("share", exploration_share),
)
CANDIDATE_SOURCES = (  # order matters: a candidate's first source comes first
    Unit(GNN, gnn_source),
    Unit(GRAPH_FILTER, graph_filter_source),
    Unit(SEQUENCE, sequence_source),
    Unit(SEGMENT, segment_source),
    Unit(POPULAR, popular_source),
    Unit(CATEGORY, category_source),
)
FILTERS = (Unit("seen", filter_seen), Unit("unavailable", filter_unavailable))
HYDRATE = Unit("hydrate", hydrate_features, FALLBACK)
SCORE = Unit("score", ranker_score, skipped=score_in_candidate_order)
SELECT = Unit("select", explore_and_take_k, skipped=take_k_unexplored)
DECORATE = Unit("decorate", reasons, skipped=plain_reasons)


def log_impressions(
    state: State, q: Query, c: Candidates | None, response: Recommendations
) -> None:
    """Queue what was shown for the event stream (api.impressions: written off this path)."""
    if state.impressions is not None:
        shown = [(r.item_id, r.category, r.explored, r.propensity) for r in response.items]
        context = c.context if c is not None and c.context is not None else None
        contexts = None if context is None else np.round(context, 4).tolist()
        events = impression_events(q.request_id, q.user_id, response.policy, shown, contexts)
        state.impressions.add(events, c.counterfactual if c is not None else None)


SIDE_EFFECTS = (Unit("impressions", log_impressions),)  # never on the answer's path


def recommend(
    state: State,
    user_id: str,
    k: int,
    explore: str,
    policy: str | None = None,
    device: str | None = None,
) -> Recommendations:
    bundle = state.bundle  # one reference: a reload mid-request does not mix two models
    policy = policy or state.settings.policy
    q = Query(user_id, k, explore, policy, bundle, device=device)  # type: ignore[arg-type]
    t = Timer()
    try:
        with t.stage("query"):
            for unit in QUERY_HYDRATORS:
                _attempt(state, unit, q)
        with t.stage("candidates"):
            c = _gather(state, q)
        with t.stage("filter"):
            _filter(state, q, c)
        with t.stage("hydrate"):
            _attempt(state, HYDRATE, q, c)
    except Degraded:
        response = fallback(bundle, user_id, k, t, q.request_id)  # type: ignore[arg-type]
        for unit in SIDE_EFFECTS:
            _attempt(state, unit, q, None, response)
        return response
    for stage in (SCORE, SELECT, DECORATE):
        with t.stage(stage.name):
            if not _attempt(state, stage, q, c)[0] and stage.skipped is not None:
                stage.skipped(q, c)
    response = _response(q, c, t)
    for unit in SIDE_EFFECTS:
        _attempt(state, unit, q, c, response)
    return response


def _attempt(state: State, unit: Unit, *args: Any) -> tuple[bool, Any]:
    """Run one unit under its failure policy: (True, its result), or (False, None) when it
    failed open. A ``FALLBACK`` unit that lost the store raises :class:`Degraded`."""
    try:
        return True, unit.run(state, *args)
    except STORE_DOWN as exc:
        if unit.on_error == FALLBACK:
            state.store_lost(exc, "recommend")
            raise Degraded from exc
        state.metrics.stage_errors.labels(unit.name).inc()
    except Exception:  # fail open: a broken unit costs its contribution, not the answer
        if unit.on_error == FALLBACK:
            raise
        log.exception("recommend stage %s failed; skipped", unit.name)
        state.metrics.stage_errors.labels(unit.name).inc()
    return False, None


def _gather(state: State, q: Query) -> Candidates:
    """Every source's candidates, deduplicated; each remembers the sources that found it."""
    sources: dict[int, list[str]] = {}
    for unit in CANDIDATE_SOURCES:
        ok, found = _attempt(state, unit, q)
        for i in found if ok else ():
            sources.setdefault(int(i), []).append(unit.name)
    idx = np.fromiter(sources, dtype=np.int64, count=len(sources))
    return Candidates(idx, [sources[int(i)] for i in idx])


def _filter(state: State, q: Query, c: Candidates) -> None:
    keep = np.ones(len(c.idx), dtype=bool)
    for unit in FILTERS:
        ok, mask = _attempt(state, unit, q, c.idx)
        if ok:
            keep &= mask
    c.idx = c.idx[keep]
    c.sources = [s for s, kept in zip(c.sources, keep.tolist(), strict=True) if kept]


def _response(q: Query, c: Candidates, t: Timer) -> Recommendations:
    items = []
    slots = (c.order, c.explored, c.propensity)
    chosen = zip(*(a.tolist() for a in slots), c.reasons, strict=True)  # type: ignore[union-attr]
    for j, ex, prop, reason in chosen:
        ix = int(c.idx[j])
        item_id, title, category = q.bundle.item(ix)
        items.append(
            Recommendation(
                item_id=item_id,
                title=title,
                category=category,
                score=round(float(c.scores[j]), 6),  # type: ignore[index]
                explored=ex,
                propensity=round(prop, 6),
                sources=c.sources[j],
                reason=reason,
            )
        )
    return Recommendations(
        request_id=q.request_id,
        user_id=q.user_id,
        policy=q.policy if q.share > 0 else "greedy",
        known=q.user_id in q.bundle.users or q.ctx.events_total > 0,
        degraded=False,
        model_version=q.bundle.version,
        explore_share=round(q.share, 4),
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


def fallback(
    bundle: Bundle, user_id: str, k: int, t: Timer, request_id: str | None = None
) -> Recommendations:
    """Redis unreachable: popular items across categories, minus what the user bought."""
    with t.stage("fallback"):
        seen = set(bundle.seen_idx(user_id).tolist())
        chosen = [i for i in bundle.diverse_popular(k + len(seen)) if i not in seen][:k]
        top = float(bundle.popularity.max()) or 1.0
        items = []
        for ix in chosen:
            item_id, title, category = bundle.item(ix)
            items.append(
                Recommendation(
                    item_id=item_id,
                    title=title,
                    category=category,
                    score=round(float(bundle.popularity[ix]) / top, 6),
                    explored=False,
                    propensity=1.0,
                    sources=[POPULAR],
                    reason=f"popular in {category}" if category else "popular right now",
                )
            )
    return Recommendations(
        request_id=request_id or new_request_id(),
        user_id=user_id,
        policy=FALLBACK_POLICY,
        known=user_id in bundle.users,
        degraded=True,
        model_version=bundle.version,
        explore_share=0.0,
        items=items,
        stages_ms=t.stages,
    )


def explain(
    bundle: Bundle,
    ix: int,
    sources: list[str],
    explored: bool,
    anchors: np.ndarray,
    top_categories: list[str],
    segment: tuple[str, str] | None = None,
) -> str:
    """One plain-words reason for one item."""
    _, _, category = bundle.item(ix)
    if explored:
        return "new for you: exploring beyond your usual picks"
    if GNN in sources and bundle.placed_by[ix] == TEXT:
        return "new in the catalogue, matched to your interests by its description"
    if GNN in sources and len(anchors):
        sims = bundle.unit_vectors[anchors] @ bundle.unit_vectors[ix]
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


def _anchors(bundle: Bundle, user_id: str, ctx: Context, limit: int = 50) -> np.ndarray:
    """Items a reason may point at: recent ones (online) first, else the training history."""
    idx = [bundle.index[i] for i in ctx.recent_items if i in bundle.index]
    idx = [i for i in idx if bundle.placed_by[i] != NONE]
    if not idx:
        idx = bundle.seen_idx(user_id)[:limit].tolist()
    return np.array(idx[:limit], dtype=np.int64)
