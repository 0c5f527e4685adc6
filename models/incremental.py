"""Continuous training: the serving artifact warm-started on what the platform gained since,
validated on the latest held-out window, served only when it is not worse.

``ig train --incremental`` (and ``ig retrain --every 15m``, which runs it on a schedule):

1. **data**: the imported log plus every event on the event bus (the live events the live job
   turned into features: the API's ``POST /v1/events``, ``ig replay``), and the live catalogue
   (core.catalogue: items put through ``PUT /v1/items``). New = later than what the serving
   artifact was trained until.
2. **window**: the newest ``window_frac`` of the new events is held out; the candidate trains
   on everything before it (what is served is what was measured).
3. **warm start**: LightGCN's table grows by the new users and items (their rows start where a
   fresh model would; the known rows keep their trained values) and trains a few epochs on the
   whole graph; the graph filter is refitted in closed form with the serving artifact's λ; new
   titles are embedded and the text projection refitted; the sequence model and the ranker are
   taken as they are (the sequence model reads item rows: new items get none until a full
   ``ig train``).
4. **safe roll-out**: both artifacts rank the window's items for the window's shoppers the way
   the API retrieves (the trained user vector moved toward the recent items, every catalogue
   item placed by the graph or by its title); the candidate is refused when it is worse beyond
   chance: the one-sided 95% upper bound of its per-shopper NDCG@20 difference from the
   serving one is below ``-IG_RETRAIN_TOLERANCE``. Otherwise ``latest`` moves (one rename),
   and the API loads it by itself (it watches ``latest``). A refused candidate stays on disk,
   marked refused; ``ig rollback`` points ``latest`` back at the previously served version.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import redis
import torch

from core import catalogue as live_catalogue
from core import names as n
from core.bus import iter_events
from core.provenance import git_sha
from core.settings import Settings
from models import artifact
from models.data import IdMap, edge_weights, interaction_matrix, load_events
from models.evaluate import ranked_metrics
from models.graph_filter import GraphFilter, GraphFilterConfig
from models.lightgcn import InterestGCN, LightGCNConfig, normalized_adjacency
from models.ranker_features import ItemSpace
from models.serve_all import reindex_rows
from models.text import TextProjection
from models.train import bought, build_catalogue, in_catalogue, reuse_titles

TRAINED_UNTIL = "trained_until"  # manifest key: the last event time the artifact learned from
BASE = "base"  # manifest key: the artifact an incremental one was warm-started from
REFUSED = "REFUSED"  # a file in a candidate's folder: it lost to the serving one (why, inside)
LOG = "retrain.jsonl"  # one line per cycle, under the artifacts folder
MIN_WINDOW_EVENTS = 10


@dataclass(frozen=True)
class IncrementalConfig:
    epochs: int = 5  # LightGCN epochs from the warm start
    window_frac: float = 0.2  # newest share of the new events held out to validate on
    min_new_events: int = 2 * MIN_WINDOW_EVENTS  # fewer: nothing to train (no candidate)
    tolerance: float = 0.0  # refused when worse beyond chance and this (worse_bound)
    max_gap_days: float = 30.0  # edge recency: a longer quiet spell counts as this long
    seed: int = 0
    warm: bool = True  # False: LightGCN from scratch on the same data (the full recipe's cost)


@dataclass
class Outcome:
    """One cycle: what was trained, how both artifacts did on the window, what is served."""

    base: str
    candidate: str | None = None
    accepted: bool = False
    reason: str = ""
    ndcg20_before: float | None = None
    ndcg20_after: float | None = None
    ndcg20_diff_upper95: float | None = None  # one-sided bound of (candidate - serving)
    window_users: int = 0
    window_events: int = 0
    new_events: int = 0
    new_users: int = 0
    new_items: int = 0
    seconds: float = 0.0
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def line(self) -> str:
        return json.dumps(asdict(self))


def live_events(client: redis.Redis, settings: Settings) -> pd.DataFrame:
    """Interest events on the event bus (every partition) in the canonical columns."""
    rows = [
        {
            n.USER_ID: str(e.get(n.USER_ID)),
            n.ITEM_ID: str(e.get(n.ITEM_ID)),
            n.EVENT_TYPE: e.get(n.EVENT_TYPE),
            n.EVENT_TIMESTAMP: e.get(n.EVENT_TIMESTAMP),
        }
        for e in iter_events(client, settings.events_stream, settings.event_partitions)
        if n.EVENT_WEIGHTS.get(str(e.get(n.EVENT_TYPE)), 0) > 0
        and e.get(n.USER_ID) is not None
        and e.get(n.ITEM_ID) is not None
    ]
    frame = pd.DataFrame(rows, columns=[n.USER_ID, n.ITEM_ID, n.EVENT_TYPE, n.EVENT_TIMESTAMP])
    frame[n.EVENT_TIMESTAMP] = pd.to_datetime(
        frame[n.EVENT_TIMESTAMP], utc=True, errors="coerce", format="ISO8601"
    )
    return frame.dropna(subset=[n.EVENT_TIMESTAMP])


def all_events(settings: Settings, dataset: str, client: redis.Redis) -> pd.DataFrame:
    """The imported log and the live events, each event once, in time order."""
    cols = [n.USER_ID, n.ITEM_ID, n.EVENT_TYPE, n.EVENT_TIMESTAMP]
    logged = load_events(settings.canonical_dir / dataset)[cols]
    logged = logged.astype({n.USER_ID: str, n.ITEM_ID: str, n.EVENT_TYPE: str})
    live = live_events(client, settings)
    live[n.EVENT_TIMESTAMP] = live[n.EVENT_TIMESTAMP].astype(logged[n.EVENT_TIMESTAMP].dtype)
    events = pd.concat([logged, live], ignore_index=True).drop_duplicates(cols)
    return events.sort_values(n.EVENT_TIMESTAMP, kind="stable").reset_index(drop=True)


def items_table(settings: Settings, dataset: str, entries: dict[str, Any]) -> pd.DataFrame:
    """The imported items with the live catalogue's entries laid over them (core.catalogue)."""
    table = pd.read_parquet(settings.canonical_dir / dataset / "items.parquet")
    return live_catalogue.lay_over(table.drop_duplicates(n.ITEM_ID), entries)


def trained_until(art: artifact.Artifact) -> pd.Timestamp:
    """The last event time ``art`` learned from."""
    m = art.manifest
    return pd.Timestamp(m.get(TRAINED_UNTIL) or m["dataset"]["last_event"])


def train_incremental(
    settings: Settings,
    client: redis.Redis,
    cfg: IncrementalConfig | None = None,
    base: Path | None = None,
) -> Outcome:
    """One cycle (module docstring) from ``base`` (default: what ``latest`` serves); the
    outcome is appended to ``<artifacts>/retrain.jsonl``."""
    cfg = cfg or IncrementalConfig(tolerance=settings.retrain_tolerance)
    started = time.perf_counter()
    root = settings.artifacts_dir
    base = (base or root / artifact.LATEST).resolve()
    base_art = artifact.read(base)
    if not (base / artifact.WEIGHTS).exists():
        raise artifact.ArtifactError(f"{base}: no LightGCN weights to warm-start from")
    outcome = Outcome(base=base.name)
    dataset = base_art.manifest["dataset"]["name"]
    events = all_events(settings, dataset, client)
    new = events[events[n.EVENT_TIMESTAMP] > trained_until(base_art)]
    outcome.new_events = len(new)
    if len(new) < cfg.min_new_events:
        outcome.reason = (
            f"{len(new)} new events (fewer than {cfg.min_new_events}): nothing to train"
        )
        return _record(root, outcome, started)
    held = max(MIN_WINDOW_EVENTS, math.ceil(cfg.window_frac * len(new)))
    window_start = new[n.EVENT_TIMESTAMP].iloc[len(new) - held]
    fit = events[events[n.EVENT_TIMESTAMP] < window_start]
    window = events[events[n.EVENT_TIMESTAMP] >= window_start]
    outcome.window_events = len(window)
    _, entries = live_catalogue.read(client, settings.catalogue_key)
    table = items_table(settings, dataset, entries)

    cand_art = _warm_fit(settings, cfg, base, base_art, fit, table, outcome)
    path = artifact.save(cand_art, root, promote=False)
    outcome.candidate = path.name
    roll_out(settings, base_art, cand_art, root, fit, window, cfg.tolerance, outcome)
    return _record(root, outcome, started)


def roll_out(
    settings: Settings,
    serving_art: artifact.Artifact,
    cand_art: artifact.Artifact,
    root: Path,
    fit: pd.DataFrame,
    window: pd.DataFrame,
    tolerance: float,
    outcome: Outcome,
) -> bool:
    """Serve the candidate, saved under ``root`` (``latest`` points at it), unless it is worse
    than the serving artifact on ``window`` beyond chance and ``tolerance`` (:func:`window_ndcg`,
    both over the candidate's catalogue, :func:`worse_bound`); else mark it refused. Fills
    ``outcome``; True when served."""
    candidate = root / cand_art.manifest["version"]
    universe = IdMap(cand_art.catalogue[n.ITEM_ID].astype(str).tolist())
    text = cand_art.text_embeddings
    live_w = settings.live_interest_weight
    before, before_each = window_ndcg(serving_art, fit, window, universe, text, live_w)
    after, after_each = window_ndcg(cand_art, fit, window, universe, text, live_w)
    outcome.ndcg20_before, outcome.ndcg20_after = before["ndcg@20"], after["ndcg@20"]
    outcome.window_users = int(after["users"])
    upper = worse_bound(after_each - before_each)
    outcome.ndcg20_diff_upper95 = round(upper, 5)
    outcome.accepted = upper >= -tolerance
    if outcome.accepted:
        promote(root, candidate.name)
        outcome.reason = "not worse than the serving artifact on the window: served"
    else:
        outcome.reason = (
            f"worse than the serving artifact on the window: NDCG@20 {after['ndcg@20']:.4f} vs "
            f"{before['ndcg@20']:.4f}, the difference's 95% upper bound {upper:.4f} below "
            f"-{tolerance}: refused, still serving {serving_art.manifest['version']}"
        )
        (candidate / REFUSED).write_text(outcome.reason + "\n")
    return outcome.accepted


def worse_bound(diffs: np.ndarray) -> float:
    """The one-sided 95% upper bound of the mean of per-shopper differences (candidate minus
    serving): below -tolerance means the candidate is worse beyond chance; a small window's
    noise alone refuses nothing."""
    if len(diffs) == 0:
        return 0.0
    spread = float(np.std(diffs, ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else 0.0
    return float(np.mean(diffs)) + 1.645 * spread


def _warm_fit(
    settings: Settings,
    cfg: IncrementalConfig,
    base: Path,
    base_art: artifact.Artifact,
    fit: pd.DataFrame,
    table: pd.DataFrame,
    outcome: Outcome,
) -> artifact.Artifact:
    """The candidate artifact: LightGCN warm-started over the grown graph, the graph filter
    refitted, the catalogue and its text, the base's ranker and sequence model."""
    m = base_art.manifest
    gcn_cfg = LightGCNConfig(**{**m["hyper_parameters"]["lightgcn"], "seed": cfg.seed})
    users = IdMap(sorted(fit[n.USER_ID].unique()))
    items = IdMap(sorted(fit[n.ITEM_ID].unique()))
    old_users = {u: j for j, u in enumerate(base_art.users) if u != artifact.FORGOTTEN_USER}
    old_items = {i: j for j, i in enumerate(base_art.items)}
    outcome.new_users = sum(u not in old_users for u in users.ids)
    outcome.new_items = sum(i not in old_items for i in items.ids)
    torch.manual_seed(cfg.seed)
    model = InterestGCN(len(users), len(items), 0, gcn_cfg)
    weights = torch.load(base / artifact.WEIGHTS, weights_only=True)
    old = weights["embedding.weight"]
    with torch.no_grad():
        if not cfg.warm:
            old_users, old_items = {}, {}
        table_w = model.model.embedding.weight
        for ids, known, offset, old_offset in (
            (users.ids, old_users, 0, 0),
            (items.ids, old_items, len(users), len(base_art.users)),
        ):
            rows = [(offset + j, old_offset + known[x]) for j, x in enumerate(ids) if x in known]
            if rows:
                new_rows, old_rows = (torch.tensor(r) for r in zip(*rows, strict=True))
                table_w[new_rows] = old[old_rows]
    half_life = m["hyper_parameters"]["train"]["edge_half_life_days"]
    r = interaction_matrix(fit, users, items)
    adj = normalized_adjacency(edge_weights(fit, users, items, half_life, cfg.max_gap_days))
    model.fit(r, adj, epochs=cfg.epochs, desc="lightgcn (incremental)")
    with torch.no_grad():
        user_emb, item_emb = model.embeddings(adj)
    cat = build_catalogue(table, fit, items)
    cat_ids = IdMap(cat[n.ITEM_ID].tolist())
    text = projection = None
    if base_art.text_embeddings is not None:
        text = reuse_titles(base_art.catalogue, base_art.text_embeddings, cat)
        graph_rows = [cat_ids.index[i] for i in items.ids]
        projection = TextProjection.fit(text[graph_rows], item_emb.numpy()).weight
    gf = None
    l2 = m["hyper_parameters"].get("graph_filter")
    if base_art.graph_filter is not None:
        gf = in_catalogue(GraphFilter.fit(r, GraphFilterConfig(), l2).weights, items, cat_ids)
    seq = None
    if base_art.sequence_items is not None:
        seq = reindex_rows(base_art.sequence_items, base_art.catalogue, cat)
    metrics = json.loads((base / artifact.METRICS).read_text())
    manifest = {
        **m,
        "version": artifact.new_version(f"{m['dataset']['name']}-incremental"),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        BASE: base.name,
        TRAINED_UNTIL: str(fit[n.EVENT_TIMESTAMP].max()),
        "trained_on": f"incremental from {base.name}: {len(fit)} events, {cfg.epochs} epochs",
        "dims": {**m["dims"], "users": len(users), "items": len(items)},
    }
    manifest["dataset"] = {**m["dataset"], "events": len(fit)}
    return artifact.Artifact(
        manifest=manifest,
        users=users.ids,
        items=items.ids,
        user_embeddings=user_emb.numpy(),
        item_embeddings=item_emb.numpy(),
        catalogue=cat,
        seen=interaction_matrix(bought(fit), users, cat_ids),
        text_embeddings=text,
        text_projection=projection,
        ranker=base_art.ranker,
        segments=base_art.segments,
        user_attributes=base_art.user_attributes,
        metrics={**metrics, "incremental": {"base": base.name, "epochs": cfg.epochs}},
        weights=model.model.state_dict(),
        graph_filter=gf,
        sequence_weights=base_art.sequence_weights,
        sequence_items=seq,
    )


def window_ndcg(
    art: artifact.Artifact,
    fit: pd.DataFrame,
    window: pd.DataFrame,
    universe: IdMap,
    text: np.ndarray | None,
    live_weight: float,
    k: int = 20,
) -> tuple[dict[str, float], np.ndarray]:
    """How ``art`` ranks the ``window``'s items for its shoppers, as the API's GNN retrieval
    does: each shopper's trained vector moved toward their 20 most recent items before the
    window (``fit``), every item of ``universe`` placed by the graph, else by its title
    (``text`` [C, 384] in universe order) through the artifact's projection; items the shopper
    had before the window are left out. Recall/NDCG/hit at 10 and ``k``, over every window
    shopper with an item they had not had before, and each one's NDCG@``k`` (in the order of
    their ids: two artifacts' arrays pair up)."""
    dim = art.item_embeddings.shape[1]
    vectors = np.zeros((len(universe), dim), dtype=np.float32)
    placed = np.zeros(len(universe), dtype=bool)
    if text is not None and art.text_projection is not None:
        titled = np.abs(text).sum(axis=1) > 0
        vectors[titled] = TextProjection(art.text_projection)(text[titled])
        placed |= titled
    graph = [(universe.index[i], j) for j, i in enumerate(art.items) if i in universe.index]
    if graph:
        rows, own = (np.array(x) for x in zip(*graph, strict=True))
        vectors[rows] = art.item_embeddings[own]
        placed[rows] = True
    popularity = np.zeros(len(universe), dtype=np.float32)
    pop = fit.groupby(n.ITEM_ID)[n.USER_ID].nunique()
    known = pop.index.isin(universe.index)
    popularity[universe.encode(pd.Series(pop.index[known]))] = pop.to_numpy()[known]
    users = {u: j for j, u in enumerate(art.users) if u != artifact.FORGOTTEN_USER}
    space = ItemSpace(users, art.user_embeddings, universe.index, vectors, popularity, placed)
    had = fit[fit[n.USER_ID].isin(set(window[n.USER_ID]))]
    history = had.groupby(n.USER_ID)[n.ITEM_ID].agg(list).to_dict()
    truth: dict[int, set[int]] = {}
    ranked: dict[int, np.ndarray] = {}
    for j, (user, got) in enumerate(window.groupby(n.USER_ID)[n.ITEM_ID]):
        before = history.get(user, [])
        relevant = {universe.index.get(i, -1 - j) for i in set(got) - set(before)}
        if not relevant:
            continue
        truth[j] = relevant
        recent = list(dict.fromkeys(reversed(before)))[:20]  # newest first, each once
        vec = space.user_vector(str(user), recent, live_weight)
        if vec is None:
            continue
        scores = np.where(placed, vectors @ vec, -np.inf)
        scores[[universe.index[i] for i in set(before) if i in universe.index]] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        ranked[j] = top[np.isfinite(scores[top])]
    each = np.array(
        [ranked_metrics({u: ranked.get(u, [])}, {u: t}, len(universe), (k,))[f"ndcg@{k}"]
         for u, t in truth.items()]
    )  # fmt: skip
    return ranked_metrics(ranked, truth, len(universe), (10, k)), each


def promote(root: Path, version: str) -> None:
    """Serve ``version``: ``latest`` points at it (one rename; the API watching ``latest``
    loads it), and the served history (for ``rollback``) records it."""
    artifact.point_latest(root, version)


def rollback(root: Path, to: str | None = None) -> tuple[str | None, str]:
    """Point ``latest`` back at the version served before the current one (or at ``to``);
    returns (from, to). ValueError when there is nothing to go back to."""
    current = artifact.latest_version(root)
    if to is None:
        stack = [v for v in artifact.served_stack(root) if (root / v / artifact.MANIFEST).exists()]
        while stack and stack[-1] == current:
            stack.pop()
        if not stack and current is not None:  # no history (an older project): its base
            manifest = json.loads((root / current / artifact.MANIFEST).read_text())
            if (root / str(manifest.get(BASE)) / artifact.MANIFEST).exists():
                stack = [manifest[BASE]]
        if not stack:
            raise ValueError(f"no earlier served artifact under {root} to roll back to")
        to = stack[-1]
    artifact.read(root / to)  # refuse an incomplete one before pointing at it
    artifact.point_latest(root, to, artifact.ROLLBACK)
    return current, to


def _record(root: Path, outcome: Outcome, started: float) -> Outcome:
    outcome.seconds = round(time.perf_counter() - started, 1)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOG, "a") as f:
        f.write(outcome.line() + "\n")
    return outcome
