"""The ranker's training data, built as serving builds it.

Rows are what the API ranks: each user's retrieved candidates at a cut (never an item they had
bought: serving filters those out), labelled by what they bought after it. Each row gets its
ranker_v1 features point-in-time from Feast's offline store (windowed counts as of the row's
time) and its GNN score from the user's vector as the API computes it, from ``recent_items`` as
of that time (:mod:`models.ranker_features`, the one definition both paths call). Fit at the
validation cut with the train-only model; AUC at the test cut with the evaluated model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core import names as n
from core.feast_store import open_store, service_refs
from core.settings import Settings
from core.windows import add_read_time_columns
from models.data import Split, recent_items
from models.ranker import LABEL, Ranker, choose_blend, feature_columns, join_features
from models.ranker_features import (
    CATEGORY_AFFINITY,
    GNN_SCORE,
    GRAPH_FILTER_SCORE,
    MODEL_SCORES,
    RECENT_ITEMS,
    SEQUENCE_SCORE,
    ItemSpace,
    pick,
    ranker_inputs,
)


def ranker_metrics(
    settings: Settings,
    split: Split,
    categories: pd.Series,
    fit_space: ItemSpace,
    test_space: ItemSpace,
    seed: int,
) -> dict[str, Any]:
    """The ranker, fitted on the candidates the API would rank for each validation user at the
    validation cut (train-only model), labelled by what they went on to buy; AUC (with and
    without the Feast features, and of the GNN score alone) on the test users' candidates at
    the test cut (the evaluated model). The fitted ranker as ``model``.

    ``categories``: item_id -> category."""
    from sklearn.metrics import roc_auc_score

    if not (settings.offline_dir / n.ITEM_STATS).exists():
        return {"note": "no offline store: run `make backfill apply materialize` first"}
    store = open_store(settings)
    weight = settings.live_interest_weight
    depths = {
        "gnn": settings.candidates_gnn,
        "graph_filter": settings.candidates_graph_filter,
        "sequence": settings.candidates_sequence,
    }
    history = pd.concat([split.train, split.val])
    fit_rows = candidate_rows(split.val, fit_space, depths, recent_items(split.train))
    test_rows = candidate_rows(split.test, test_space, depths, recent_items(history))
    fit_x, cols = point_in_time_inputs(store, fit_rows, fit_space, categories, weight)
    test_x, _ = point_in_time_inputs(store, test_rows, test_space, categories, weight, cols)
    fit_y, test_y = fit_rows[LABEL].to_numpy(), test_rows[LABEL].to_numpy()
    fit_users = fit_rows[n.USER_ID].astype(str).to_numpy()
    weight, shares, search = choose_blend(fit_x, fit_y, fit_users, cols, seed)
    ranker = Ranker(cols, seed=seed, weight=weight, shares=shares).fit_matrix(fit_x, fit_y)
    features = [j for j, c in enumerate(cols) if c not in MODEL_SCORES]
    features_only = Ranker([cols[j] for j in features], seed=seed)
    features_only.fit_matrix(fit_x[:, features], fit_y)
    gnn = np.nan_to_num(test_x[:, cols.index(GNN_SCORE)], nan=-1e9)
    out = {
        "auc_with_features": round(ranker.auc_matrix(test_x, test_y), 4),
        "auc_without": round(float(roc_auc_score(test_y, gnn)), 4),
        "auc_features_only": round(features_only.auc_matrix(test_x[:, features], test_y), 4),
        "blend_weight": weight,
        "blend_shares": shares,
        "blend_search": {
            "metric": "NDCG@20 of each user's candidate list, trees fitted on half of the "
            "validation users, scored on the other half (order = weight * trees + (1 - weight) "
            "* (shares of the GNN score and the graph filter's), each standardised)",
            "grid": search,
        },
        "rows": f"each user's top items of each retrieval source at the cut ({depths}; a "
        "union), never an item they had bought (serving filters those "
        "out); label: bought in the period",
        "fit_rows": len(fit_rows),
        "fit_positives": int(fit_y.sum()),
        "test_rows": len(test_rows),
        "test_positives": int(test_y.sum()),
        "features": cols,
        "model": ranker,
    }
    for col, name in ((GRAPH_FILTER_SCORE, "graph_filter"), (SEQUENCE_SCORE, "sequence")):
        if col in cols:
            scores = np.nan_to_num(test_x[:, cols.index(col)], nan=-1e9)
            out[f"auc_{name}"] = round(float(roc_auc_score(test_y, scores)), 4)
    return out


def candidate_rows(
    period: pd.DataFrame,
    space: ItemSpace,
    depths: dict[str, int],
    recent: dict[str, list[str]] | None = None,
) -> pd.DataFrame:
    """(user_id, item_id, event_timestamp, label) rows: for every user of ``space`` who buys
    something in ``period``, the items the retrieval sources find at the period's start, as
    many as ``depths`` says per source (``gnn``: by their vector; ``graph_filter``: by their
    training history, where the filter relates them at all; ``sequence``: after their
    ``recent`` items, newest first, as ``user_interest.recent_items`` held them), a union,
    never an
    item they had bought (what the API's sources and seen filter give), at that time, labelled
    1 if bought in the period."""
    as_of = period[n.EVENT_TIMESTAMP].min()
    users = [u for u in pd.unique(period[n.USER_ID]) if u in space.users]
    rows = np.array([space.users[u] for u in users], dtype=np.int64)
    item_ids = np.array(list(space.index), dtype=object)
    gnn = space.user_vectors[rows] @ space.vectors.T  # [B, C]
    gnn[:, ~space.placed] = -np.inf
    sources = [(gnn, depths.get("gnn", 0))]
    if space.filter is not None and space.trained is not None:
        filtered = np.asarray((space.trained[rows] @ space.filter).todense())  # [B, C]
        filtered[filtered == 0] = -np.inf  # no evidence (api.bundle.Bundle.retrieve_filtered)
        sources.append((filtered, depths.get("graph_filter", 0)))
    if space.sequence is not None and recent is not None:
        after = np.full(gnn.shape, -np.inf)
        for b, user in enumerate(users):
            scores = space.sequence_scores(recent.get(str(user), []))
            if scores is not None:
                after[b] = np.where(space.sequence.placed, scores, -np.inf)
        sources.append((after, depths.get("sequence", 0)))
    picked = []
    for scores, count in sources:
        if count <= 0:
            continue
        if space.trained is not None:
            had = space.trained[rows].tocoo()
            scores[had.row, had.col] = -np.inf
        count = min(count, scores.shape[1])
        top = np.argpartition(-scores, count - 1, axis=1)[:, :count]
        ok = np.isfinite(np.take_along_axis(scores, top, axis=1))
        user_rows = np.repeat(np.arange(len(users)), count).reshape(top.shape)
        picked.append(pd.DataFrame({"u": user_rows[ok], "i": top[ok]}))
    found = pd.concat(picked).drop_duplicates(ignore_index=True)
    found = pd.DataFrame(
        {
            n.USER_ID: np.array(users, dtype=object)[found["u"].to_numpy()],
            n.ITEM_ID: item_ids[found["i"].to_numpy()],
        }
    )
    bought = set(zip(period[n.USER_ID], period[n.ITEM_ID], strict=True))
    frame = found.assign(**{n.EVENT_TIMESTAMP: as_of})
    pairs = zip(frame[n.USER_ID], frame[n.ITEM_ID], strict=True)
    frame[LABEL] = np.fromiter((p in bought for p in pairs), dtype=np.int64, count=len(frame))
    return frame


def point_in_time_inputs(
    store: Any,
    pairs: pd.DataFrame,
    space: ItemSpace,
    categories: pd.Series,
    live_weight: float,
    columns: list[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """The ranker's inputs [N, C] for (user, item, event_timestamp) rows, as the API builds
    them at that time: ranker_v1 from Feast's offline store (point-in-time), windowed counts as
    of the row's time, the user's vector from ``recent_items`` as of that time, and the graph
    filter's and the sequence model's scores over their history and ``recent_items``.

    ``columns``: the ranker's columns (None: the numeric Feast features found, then the
    category affinity, then the model scores: the GNN's, and the graph filter's and the
    sequence model's where ``space`` has them). Returns (inputs in the rows' order, columns)."""
    frame = offline_features(store, pairs)
    if columns is None:
        models = [GNN_SCORE] + ([GRAPH_FILTER_SCORE] if space.filter is not None else [])
        models += [SEQUENCE_SCORE] if space.sequence is not None else []
        columns = [*feature_columns(frame), CATEGORY_AFFINITY, *models]
    user_cols = [c for c in frame.columns if _entity(c) == n.USER_ID]
    item_cols = [c for c in frame.columns if _entity(c) == n.ITEM_ID]
    out = np.empty((len(frame), len(columns)))
    for (user_id, _), rows in frame.groupby([n.USER_ID, n.EVENT_TIMESTAMP], sort=False):
        user = rows.iloc[0][user_cols].to_dict()
        items = {c: rows[c].tolist() for c in item_cols}
        recent = _listed(user.get(RECENT_ITEMS))
        vec = space.user_vector(user_id, recent, live_weight)
        idx = np.array([space.index.get(i, -1) for i in rows[n.ITEM_ID]], dtype=np.int64)
        cats = categories.reindex(rows[n.ITEM_ID]).tolist()
        scores = {
            GNN_SCORE: space.gnn_scores(vec, idx),
            GRAPH_FILTER_SCORE: pick(space.filter_scores(user_id, recent), idx),
            SEQUENCE_SCORE: pick(space.sequence_scores(recent), idx),
        }
        out[rows.index.to_numpy()] = ranker_inputs(columns, user, items, cats, scores)
    return out, columns


def offline_features(store: Any, pairs: pd.DataFrame) -> pd.DataFrame:
    """ranker_v1 for each (user, item, event_timestamp) row of ``pairs`` from Feast's offline
    store, in the rows' order, with windowed counts as of each row's time: the user side and the
    item side each read once per (entity, time) and joined back (models.ranker.join_features)."""
    service = store.get_feature_service(n.RANKER_V1)
    frame = pairs[[n.USER_ID, n.ITEM_ID, n.EVENT_TIMESTAMP]].astype(
        {n.USER_ID: object, n.ITEM_ID: object}
    )
    frame = frame.reset_index(drop=True)
    for key in (n.USER_ID, n.ITEM_ID):
        entity = frame[[key, n.EVENT_TIMESTAMP]].drop_duplicates().reset_index(drop=True)
        got = store.get_historical_features(
            entity_df=entity, features=service_refs(service, key), full_feature_names=True
        ).to_df()
        frame = join_features(frame, got, key)
    epoch = pd.Timestamp(0, tz="UTC")
    label_us = ((frame[n.EVENT_TIMESTAMP] - epoch) // pd.Timedelta(microseconds=1)).tolist()
    return frame.assign(**add_read_time_columns(frame.to_dict("list"), label_us))


def _entity(column: str) -> str | None:
    view = column.split("__", 1)[0] if "__" in column else None
    return n.VIEW_ENTITY_KEY.get(view) if view else None


def _listed(value: Any) -> list[str]:
    return list(value) if isinstance(value, list | tuple | np.ndarray) else []
