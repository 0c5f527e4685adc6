"""``ig evaluate``: the list shoppers would see, measured.

Replays the real recommend pipeline (api.recommend: context, user vector, candidate sources,
filters, hydrate, ranker, select with exploration off) for every test user of the artifact's
own split, with every feature read from Feast's offline store as of the test cut (the rows the
online store held at that moment, windowed counts at that time), and scores the answers with the
same metrics as the raw models (models.evaluate.ranked_metrics, same users, same truth).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from api.bundle import Bundle
from api.cache import ItemFeatureCache
from api.metrics import ApiMetrics
from api.recommend import recommend
from core import names as n
from core.feast_store import open_store, service_refs
from core.settings import Settings
from models import artifact
from models.data import IdMap
from models.evaluate import ranked_metrics
from models.explore import GREEDY, ExploreConfig

SERVED = "served"  # the list the default settings serve (IG_USE_RANKER)
SERVED_RANKER = "served_ranker"  # ordered by the ranker
SERVED_RETRIEVAL = "served_retrieval"  # ordered by the GNN score (no ranker)
BASELINES = ("popularity", "itemknn", "bpr_mf")
RATIO = "served_over_best_baseline_ndcg20"


class AsOfFeatures:
    """Feature rows read once from Feast's offline store as of one time, answered like
    :class:`api.features.OnlineFeatures` (None where nothing was known, lists as lists)."""

    def __init__(self, users: pd.DataFrame, items: pd.DataFrame) -> None:
        self._users = _rows(users, n.USER_ID)
        self._items = _rows(items, n.ITEM_ID)
        self._user_cols = [c for c in users.columns if c not in (n.USER_ID, n.EVENT_TIMESTAMP)]
        self._item_cols = [c for c in items.columns if c not in (n.ITEM_ID, n.EVENT_TIMESTAMP)]

    @classmethod
    def read(
        cls, store: Any, user_ids: list[str], item_ids: list[str], as_of: pd.Timestamp
    ) -> AsOfFeatures:
        def at(key: str, ids: list[str], features: Any) -> pd.DataFrame:
            entity = pd.DataFrame({key: pd.Series(ids, dtype=object), n.EVENT_TIMESTAMP: as_of})
            return store.get_historical_features(  # type: ignore[no-any-return]
                entity_df=entity, features=features, full_feature_names=True
            ).to_df()

        ranker = store.get_feature_service(n.RANKER_V1)
        users = at(n.USER_ID, user_ids, store.get_feature_service(n.PROFILE_V1))
        return cls(users, at(n.ITEM_ID, item_ids, service_refs(ranker, n.ITEM_ID)))

    def user(self, user_id: str) -> dict[str, list[Any]]:
        row = self._users.get(user_id, {})
        return {n.USER_ID: [user_id], **{c: [row.get(c)] for c in self._user_cols}}

    def items(self, item_ids: list[str]) -> dict[str, list[Any]]:
        rows = [self._items.get(i, {}) for i in item_ids]
        return {c: [r.get(c) for r in rows] for c in self._item_cols}


def _rows(frame: pd.DataFrame, key: str) -> dict[str, dict[str, Any]]:
    """key -> {column: value}, NaN as None and arrays as lists (as an online read gives)."""
    out = {}
    for record in frame.drop_duplicates(key).to_dict("records"):
        out[str(record[key])] = {c: _online_value(v) for c, v in record.items()}
    return out


def _online_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and np.isnan(value):
        return None
    return None if value is pd.NA or value is pd.NaT else value


@dataclass
class ReplayState:
    """What api.recommend reads from api.state.State, with features as of a past time, that
    time as the clock, no item cache, no impression log and no exploration."""

    settings: Settings
    bundle: Bundle
    features: AsOfFeatures
    as_of_us: int
    item_cache: ItemFeatureCache = field(default_factory=lambda: ItemFeatureCache(0))
    explore_cfg: ExploreConfig = field(default_factory=ExploreConfig)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    impressions: None = None

    def clock_us(self) -> int:
        return self.as_of_us

    def store_lost(self, exc: BaseException, route: str | None = None) -> None:
        raise RuntimeError("the offline replay lost its features") from exc


def served_lists(state: ReplayState, user_ids: list[str], k: int) -> dict[str, list[str]]:
    """user_id -> the item ids ``GET /v1/recommend/{user}?k=&explore=off`` answers."""
    out = {}
    for user_id in user_ids:
        answer = recommend(cast(Any, state), user_id, k, "off", GREEDY)
        out[user_id] = [item.item_id for item in answer.items]
    samples = [s for m in state.metrics.stage_errors.collect() for s in m.samples]
    errors = sum(s.value for s in samples if s.name.endswith("_total"))
    if errors:  # a unit that failed open would be measured as if it were the pipeline
        raise RuntimeError(f"{int(errors)} recommend stages failed during the replay")
    return out


def evaluate_served(
    settings: Settings, path: Path, k: int = 20, both: bool = True
) -> dict[str, Any]:
    """Replay the evaluated artifact of ``path`` (itself, or the one its manifest names: a
    served artifact trained on everything cannot be measured on its own training data) for
    every test user of its split. Adds ``served_ranker``, ``served_retrieval`` and ``served``
    (the one ``IG_USE_RANKER`` selects) under ``models`` of both metrics.json, and ``served``'s
    ratio to the best baseline's NDCG@20, and the users held out of the graph served from their
    recent items alone (``inductive_users.served_from_recent_items``); returns the updated
    metrics. ``both=False`` replays the selected order only (``ig train`` does: it saves a
    replay)."""
    from models.train import TrainConfig, inductive_truth, prepare_data

    evaluated = artifact.evaluated_path(path)
    bundle = Bundle.load(evaluated)
    manifest = json.loads((evaluated / artifact.MANIFEST).read_text())
    cfg = TrainConfig(**manifest["hyper_parameters"]["train"])
    data = prepare_data(settings, cfg, np.random.default_rng(cfg.seed))
    as_of = data.split.test[n.EVENT_TIMESTAMP].min()
    users = [data.users.ids[u] for u in data.test_truth]
    ind_users, _, ind_truth = inductive_truth(data)
    held_out = [ind_users.ids[u] for u in ind_truth]
    features = AsOfFeatures.read(open_store(settings), users + held_out, bundle.ids, as_of)
    as_of_us = int((as_of - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1))

    def measure(ranker: object | None, ids: IdMap, truth: dict[int, set[int]]) -> dict[str, Any]:
        state = ReplayState(settings, replace(bundle, ranker=ranker), features, as_of_us)
        lists = served_lists(state, [ids.ids[u] for u in truth], k)
        ranked = {u: [data.items.index.get(i, -1) for i in lists[ids.ids[u]]] for u in truth}
        return ranked_metrics(ranked, truth, len(data.items))

    use_ranker = settings.use_ranker and bundle.ranker is not None
    ranker = (
        bundle.ranker.with_weight(settings.ranker_weight, settings.ranker_shares)
        if bundle.ranker
        else None
    )
    variants = [(SERVED_RANKER, ranker), (SERVED_RETRIEVAL, None)]
    if bundle.ranker is None or not both:
        variants = [variants[0] if use_ranker else variants[1]]
    results = {name: measure(ranker, data.users, data.test_truth) for name, ranker in variants}
    chosen = SERVED_RANKER if use_ranker else SERVED_RETRIEVAL
    results[SERVED] = {**results[chosen], "ordered_by": chosen}
    # users the model never trained on, served from their recent items alone (inductive path)
    inductive = measure(dict(variants)[chosen], ind_users, ind_truth)
    for target in dict.fromkeys([evaluated, path]):
        metrics = json.loads((target / artifact.METRICS).read_text())
        metrics["models"].update(results)
        metrics.setdefault("inductive_users", {})["served_from_recent_items"] = inductive
        best = max(metrics["models"][b]["ndcg@20"] for b in BASELINES)
        metrics[RATIO] = round(results[SERVED]["ndcg@20"] / best, 4) if best > 0 else None
        metrics["served_as_of"] = str(as_of)
        (target / artifact.METRICS).write_text(json.dumps(metrics, indent=2))
    return metrics
