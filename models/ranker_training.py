"""The ranker's training data: point-in-time ranker_v1 features from Feast's offline store,
with windowed counts as of each label's time (the same function the API uses online), the
category affinity and the GNN score; fit on validation pairs, AUC on test pairs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from core import names as n
from core.settings import Settings
from core.windows import add_read_time_columns
from models.data import IdMap, Split
from models.lightgcn import InterestGCN
from models.ranker import (
    CATEGORY_AFFINITY,
    GNN_SCORE,
    LABEL,
    TOP_CATEGORIES,
    TOP_CATEGORY_SCORES,
    Ranker,
    category_affinity,
    feature_columns,
    labelled_pairs,
    restore_dropped,
)


def ranker_metrics(
    settings: Settings,
    split: Split,
    users: IdMap,
    items: IdMap,
    items_table: pd.DataFrame,
    gcn: InterestGCN,
    adj_train: torch.Tensor,
    adj_hist: torch.Tensor,
    cfg: Any,
) -> dict[str, Any]:
    """AUC of the ranker with and without the Feast features; the fitted ranker as ``model``.

    The GNN score comes from the train-only model, so validation pairs (the ranker's training
    data) were never edges it trained on."""
    from sklearn.metrics import roc_auc_score

    from core.feast_store import open_store

    if not (settings.offline_dir / n.ITEM_STATS).exists():
        return {"note": "no offline store: run `make backfill apply` first"}
    store = open_store(settings)
    service = store.get_feature_service(n.RANKER_V1)
    categories = items_table.drop_duplicates(n.ITEM_ID).set_index(n.ITEM_ID)[n.CATEGORY]

    def frame(events: pd.DataFrame, adj: torch.Tensor, seed: int) -> pd.DataFrame:
        pairs = _pairs(events, users, items, gcn, adj, cfg.ranker_pairs, seed)
        got = store.get_historical_features(
            entity_df=pairs, features=service, full_feature_names=True
        ).to_df()
        return _with_read_time_features(restore_dropped(pairs, got), categories)

    fit_on = frame(split.val, adj_train, cfg.seed)
    test_on = frame(split.test, adj_hist, cfg.seed + 1)
    cols = [*feature_columns(fit_on), CATEGORY_AFFINITY, GNN_SCORE]
    ranker = Ranker(cols).fit(fit_on)
    return {
        "auc_with_features": round(ranker.auc(test_on), 4),
        "auc_without": round(float(roc_auc_score(test_on[LABEL], test_on[GNN_SCORE])), 4),
        "auc_features_only": round(Ranker(cols[:-1]).fit(fit_on).auc(test_on), 4),
        "fit_pairs": len(fit_on),
        "test_pairs": len(test_on),
        "features": cols,
        "model": ranker,
    }


def _pairs(
    events: pd.DataFrame,
    users: IdMap,
    items: IdMap,
    gcn: InterestGCN,
    adj: torch.Tensor,
    count: int,
    seed: int,
) -> pd.DataFrame:
    """Labelled (user, item, time) pairs: positives, uniform negatives and negatives drawn
    from each user's top-100 retrieved items (what the API ranks), with the GNN score."""
    known = events[events[n.USER_ID].isin(users.index) & events[n.ITEM_ID].isin(items.index)]
    with torch.no_grad():
        u_emb, i_emb = gcn.embeddings(adj)
    rng = np.random.default_rng(seed)
    item_ids = np.asarray(items.ids, dtype=object)

    def retrieved(batch: pd.Series) -> np.ndarray:
        """One of each user's top-100 retrieved items."""
        scores = u_emb[torch.as_tensor(users.encode(batch))] @ i_emb.T
        depth = min(100, len(item_ids))
        top = torch.topk(scores, depth, dim=1).indices.numpy()
        return item_ids[top[np.arange(len(top)), rng.integers(0, depth, len(top))]]

    pairs = labelled_pairs(known, items.ids, count, seed, hard=retrieved)
    u = torch.as_tensor(users.encode(pairs[n.USER_ID]))
    i = torch.as_tensor(items.encode(pairs[n.ITEM_ID]))
    pairs[GNN_SCORE] = (u_emb[u] * i_emb[i]).sum(-1).numpy()
    return pairs


def _with_read_time_features(frame: pd.DataFrame, categories: pd.Series) -> pd.DataFrame:
    """Windowed counts as of each label's time and the category affinity."""
    epoch = pd.Timestamp(0, tz="UTC")
    label_us = ((frame[n.EVENT_TIMESTAMP] - epoch) // pd.Timedelta(microseconds=1)).tolist()
    frame = frame.assign(**add_read_time_columns(frame.to_dict("list"), label_us))
    frame[CATEGORY_AFFINITY] = category_affinity(
        frame[TOP_CATEGORIES].tolist(),
        frame[TOP_CATEGORY_SCORES].tolist(),
        categories.reindex(frame[n.ITEM_ID]).tolist(),
    )
    return frame
