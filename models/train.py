"""``make train``: interest graph -> LightGCN + graph filter + baselines + text cold start +
ranker -> artifact.

One run, one split, every model measured on it. Writes ``artifacts/<version>/`` (weights, id
maps, embeddings, ranker, ``metrics.json``, ``manifest.json``, ``training.png``) and points
``artifacts/latest`` at it.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from core import names as n
from core.provenance import git_sha
from core.settings import Settings
from models import artifact
from models.baselines import ItemKNN, ItemKNNConfig, Popularity
from models.data import (
    IdMap,
    Split,
    edge_weights,
    ground_truth,
    interaction_matrix,
    leave_last_out,
    load_events,
    one_hop,
)
from models.data import time_split as global_time_split
from models.evaluate import evaluate
from models.graph_filter import GraphFilter, GraphFilterConfig, choose_l2
from models.lightgcn import InterestGCN, LightGCNConfig, normalized_adjacency
from models.ranker_features import ItemSpace
from models.sequence import (
    SERVE_LENGTH,
    SequenceConfig,
    SequenceModel,
    SequenceScorer,
    catalogue_table,
    sequences,
    text_init,
)


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "online-retail"
    split: str = "time"  # "time" (global cut) or "leave_last_out"
    val_frac: float = 0.1  # time cut: the share of events (by time) in validation
    test_frac: float = 0.1  # time cut: the last share of events, the test split
    cold_item_frac: float = 0.05  # items held out of the graph entirely (text cold start)
    inductive_user_frac: float = 0.1  # users held out of the graph (embedded from history)
    ranker: bool = True
    graph_filter: bool = True  # models.graph_filter: a retrieval source and a ranker input
    sequence: bool = True  # models.sequence (SASRec): a retrieval source and a ranker input
    edge_half_life_days: float = 60.0  # recency of graph edges (behaviour-weighted)
    refit: bool = True  # after early stopping on validation, retrain on train+val
    bpr_mf_lr: float | None = 5e-3  # BPR-MF's own (ig tune; None: LightGCN's)
    seed: int = 0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _holdout(values: np.ndarray, frac: float, rng: np.random.Generator) -> set[str]:
    k = int(round(len(values) * frac))
    return set(rng.choice(values, k, replace=False).tolist()) if k else set()


def user_vectors_from_history(
    history: sp.csr_matrix, item_emb: torch.Tensor, item_degree: np.ndarray
) -> torch.Tensor:
    """Inductive users (torch in and out): :func:`models.data.one_hop` over their history.

    history [B, I] (0/1), item_emb [I, D], item_degree [I] -> [B, D]
    """
    return torch.from_numpy(one_hop(history, item_emb.numpy(), item_degree))


@dataclass
class TrainData:
    """The split, the id maps, and the matrices every model trains and is evaluated on."""

    events: pd.DataFrame
    items_table: pd.DataFrame
    split: Split
    history: pd.DataFrame  # train + val
    cold: set[str]  # items held out of the graph (text cold start)
    inductive: set[str]  # users held out of the graph (embedded from history)
    users: IdMap
    items: IdMap
    r_train: sp.csr_matrix  # [U, I]
    r_hist: sp.csr_matrix  # [U, I] train + val
    val_truth: dict[int, set[int]]
    test_truth: dict[int, set[int]]
    adj_train: torch.Tensor  # [U + I, U + I] normalised, behaviour- and recency-weighted
    adj_hist: torch.Tensor


@dataclass
class Fitted:
    mf: InterestGCN
    gcn_train_only: InterestGCN  # early-stopped on validation (the ranker's GNN score)
    gcn: InterestGCN  # refit on train + val (served)
    mf_hist: dict[str, list[float]]
    gcn_hist: dict[str, list[float]]
    user_emb: torch.Tensor  # [U, D] the served model's embeddings on the train+val graph
    item_emb: torch.Tensor  # [I, D]
    filter_train: GraphFilter | None = None  # on train (the ranker's fit rows)
    filter: GraphFilter | None = None  # on train + val (evaluated, served)
    sequence: SequenceModel | None = None  # on train's sequences (early-stopped on val)
    sequence_hist: dict[str, list[float]] = field(default_factory=dict)
    sequence_init: np.ndarray | None = None  # [C, D] every catalogue item's title place
    # (weights, [C, D] item table) taken as they are (models.serve_all: the evaluated run's)
    sequence_served: tuple[dict[str, torch.Tensor], np.ndarray] | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # training time per model


def train(
    settings: Settings,
    cfg: TrainConfig,
    gcn_cfg: LightGCNConfig,
    out_root: Path | None = None,
    after_fit: Callable[[int], None] | None = None,
    seq_cfg: SequenceConfig | None = None,
) -> Path:
    """data -> fit -> evaluate -> save: the evaluated artifact's folder (trained on the split's
    train+val; models.serve_all trains the served one on everything). ``after_fit`` is called
    with LightGCN's chosen epoch count once the multi-threaded training is done (ig train
    starts the served model's training there, models.serve_all.ServedTraining, beside the
    mostly single-threaded rest). ``seq_cfg``: the sequence
    model's (default: SequenceConfig's defaults with ``cfg.seed``)."""
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = prepare_data(settings, cfg, rng)
    fitted = fit_models(data, cfg, gcn_cfg)
    if cfg.graph_filter:
        fit_graph_filter(data, fitted, GraphFilterConfig())
    best_epochs = {
        name: int(np.argmax(hist["val_ndcg@20"])) + 1
        for name, hist in (("lightgcn", fitted.gcn_hist), ("bpr_mf", fitted.mf_hist))
    }
    catalogue = build_catalogue(data.items_table, data.history, data.items)
    catalogue_text = encode_titles(catalogue)
    if cfg.sequence:
        seq_cfg = seq_cfg or SequenceConfig(seed=cfg.seed)
        fit_sequence(data, fitted, catalogue, catalogue_text, seq_cfg)
        best_epochs["sequence"] = int(np.argmax(fitted.sequence_hist["val_ndcg@20"])) + 1
    if after_fit is not None:  # after the training that uses both cores: what follows (test
        # metrics, ranker rows from Feast, the replay) is mostly one thread, the other is free
        after_fit(best_epochs["lightgcn"])
    metrics = evaluate_models(data, fitted, cfg.dataset)
    if cfg.sequence:
        metrics["sequence_config"] = seq_cfg.as_dict()
    text = text_cold_start(data, catalogue, fitted.user_emb, fitted.item_emb, rng, catalogue_text)
    metrics["cold_items"] = text.pop("metrics")
    if cfg.ranker:
        metrics["ranker"] = fit_ranker(settings, cfg, data, fitted)
    metrics["epoch_seconds"] = round(float(np.mean(fitted.gcn_hist["epoch_seconds"])), 3)
    metrics["epochs"] = len(fitted.gcn_hist["loss"])
    for name, seconds in fitted.seconds.items():
        metrics[f"train_seconds_{name}"] = round(seconds, 1)
    metrics["best_epochs"] = best_epochs
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    metrics["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    bundle = package(settings, cfg, gcn_cfg, data, fitted, metrics, catalogue, text)
    out = artifact.save(bundle, out_root or settings.artifacts_dir)  # IG_ARTIFACTS_DIR
    plot(out / artifact.PLOT, fitted.gcn_hist, fitted.mf_hist, metrics["models"])
    print_table(metrics)
    print(f"artifact: {out}")
    return out


def prepare_data(settings: Settings, cfg: TrainConfig, rng: np.random.Generator) -> TrainData:
    """The split (time or leave-last-out), held-out cold items and inductive users, the id
    maps, interaction matrices, ground truth and the two normalised graphs."""
    canonical = settings.canonical_dir / cfg.dataset
    events = load_events(canonical)
    items_table = pd.read_parquet(canonical / "items.parquet")
    split = (
        leave_last_out(events)
        if cfg.split == "leave_last_out"
        else global_time_split(events, cfg.val_frac, cfg.test_frac)
    )
    history = pd.concat([split.train, split.val])
    titled = items_table[items_table[n.TITLE].fillna("").str.strip().ne("")]
    warm_candidates = np.array(sorted(set(titled[n.ITEM_ID]) & set(history[n.ITEM_ID])))
    cold = _holdout(warm_candidates, cfg.cold_item_frac, rng)
    train_users = np.array(sorted(split.train[n.USER_ID].unique()))
    inductive = _holdout(train_users, cfg.inductive_user_frac, rng)
    users = IdMap([u for u in train_users if u not in inductive])
    items = IdMap(sorted(set(history[n.ITEM_ID]) - cold))
    r_train = interaction_matrix(split.train, users, items)
    r_hist = interaction_matrix(history, users, items)
    data = TrainData(
        events,
        items_table,
        split,
        history,
        cold,
        inductive,
        users,
        items,
        r_train,
        r_hist,
        ground_truth(split.val, users, items, r_train),
        ground_truth(split.test, users, items, r_hist),
        normalized_adjacency(edge_weights(split.train, users, items, cfg.edge_half_life_days)),
        normalized_adjacency(edge_weights(history, users, items, cfg.edge_half_life_days)),
    )
    print(
        f"{cfg.dataset}: {len(users)} users, {len(items)} items, {r_train.nnz} train / "
        f"{r_hist.nnz} train+val edges; {len(data.val_truth)} val / {len(data.test_truth)} "
        f"test users; held out {len(cold)} cold items, {len(inductive)} inductive users"
    )
    return data


def fit_models(data: TrainData, cfg: TrainConfig, gcn_cfg: LightGCNConfig) -> Fitted:
    """BPR-MF (0 layers) and LightGCN, each early-stopped on validation, then (cfg.refit)
    refit on train+val for the best epoch count, as the baselines see train+val too."""

    def fit(
        layers: int, name: str, lr: float | None = None
    ) -> tuple[InterestGCN, InterestGCN, dict[str, list[float]]]:
        conf = replace(gcn_cfg, num_layers=layers, lr=lr or gcn_cfg.lr)
        model, hist = fit_early_stopped(data, conf, name)
        if not cfg.refit:
            return model, model, hist
        final = InterestGCN(len(data.users), len(data.items), 0, conf)
        best_epochs = int(np.argmax(hist["val_ndcg@20"])) + 1
        final.fit(data.r_hist, data.adj_hist, epochs=best_epochs, desc=f"{name} refit")
        return model, final, hist

    started = time.perf_counter()
    _, mf, mf_hist = fit(0, "bpr_mf", cfg.bpr_mf_lr)
    seconds = {"bpr_mf": time.perf_counter() - started}
    started = time.perf_counter()
    gcn_train_only, gcn, gcn_hist = fit(gcn_cfg.num_layers, "lightgcn")
    seconds["lightgcn"] = time.perf_counter() - started
    with torch.no_grad():
        user_emb, item_emb = gcn.embeddings(data.adj_hist)
    return Fitted(mf, gcn_train_only, gcn, mf_hist, gcn_hist, user_emb, item_emb, seconds=seconds)


def fit_graph_filter(data: TrainData, fitted: Fitted, cfg: GraphFilterConfig) -> None:
    """The graph filter (models.graph_filter): its λ chosen on validation (fitted on train),
    then refitted on train + val as the other models are; both kept on ``fitted``."""
    started = time.perf_counter()
    n_items = len(data.items)

    def validate(f: GraphFilter) -> float:
        return evaluate(f.scorer(data.r_train), data.val_truth, data.r_train, n_items)["ndcg@20"]

    l2, search = choose_l2(data.r_train, validate, cfg)
    fitted.filter_train = GraphFilter.fit(data.r_train, cfg, l2)
    fitted.filter = GraphFilter.fit(data.r_hist, cfg, l2)
    fitted.filter.search = search
    fitted.seconds["graph_filter"] = time.perf_counter() - started


def fit_early_stopped(
    data: TrainData, conf: LightGCNConfig, name: str
) -> tuple[InterestGCN, dict[str, list[float]]]:
    """One model on the train graph, early-stopped on validation NDCG@20 (its history)."""
    model = InterestGCN(len(data.users), len(data.items), 0, conf)
    hist = model.fit(
        data.r_train,
        data.adj_train,
        desc=name,
        validate=lambda m: evaluate(
            m.scorer(data.adj_train), data.val_truth, data.r_train, len(data.items)
        )["ndcg@20"],
    )
    return model, hist


def encode_titles(catalogue: pd.DataFrame) -> np.ndarray | None:
    """MiniLM embeddings [C, 384] of the catalogue's titles; None when no item has one."""
    titles = catalogue[n.TITLE].fillna("")
    if not titles.str.strip().ne("").any():
        return None
    from models.text import TextEncoder

    return TextEncoder().encode(titles.tolist(), progress=True)


def reuse_titles(old: pd.DataFrame, old_text: np.ndarray, catalogue: pd.DataFrame) -> np.ndarray:
    """MiniLM title embeddings [C, 384] of ``catalogue``: ``old_text``'s row (catalogue ``old``)
    where an item's title is the same, the encoder for new or changed titles only."""
    known = {
        (str(i), t): row
        for row, (i, t) in enumerate(zip(old[n.ITEM_ID], old[n.TITLE], strict=True))
        if isinstance(t, str)
    }
    text = np.zeros((len(catalogue), old_text.shape[1]), dtype=np.float32)
    todo = []
    for row, (i, t) in enumerate(zip(catalogue[n.ITEM_ID], catalogue[n.TITLE], strict=True)):
        if not isinstance(t, str) or not t.strip():
            continue
        if (str(i), t) in known:
            text[row] = old_text[known[(str(i), t)]]
        else:
            todo.append(row)
    if todo:
        from models.text import TextEncoder

        text[todo] = TextEncoder().encode([str(catalogue[n.TITLE].iloc[r]) for r in todo])
    return text


def fit_sequence(
    data: TrainData,
    fitted: Fitted,
    catalogue: pd.DataFrame,
    catalogue_text: np.ndarray | None,
    cfg: SequenceConfig,
) -> None:
    """SASRec (models.sequence) on the train split's sequences, its item embeddings started
    from the titles (:func:`models.sequence.text_init` over the catalogue), early-stopped on
    validation NDCG@20 with each user's last ``SERVE_LENGTH`` items as serving reads them."""
    started = time.perf_counter()
    cat_ids = IdMap(catalogue[n.ITEM_ID].tolist())
    init = None
    if catalogue_text is not None:
        titled = catalogue[n.TITLE].fillna("").str.strip().ne("").to_numpy()
        fitted.sequence_init = text_init(catalogue_text, cfg.dim, titled)
        init = fitted.sequence_init[[cat_ids.index[i] for i in data.items.ids]]
    model = SequenceModel(len(data.items), cfg, init)
    train_seqs = sequences(data.split.train, data.users, data.items)
    n_items = len(data.items)

    def validate(m: SequenceModel) -> float:
        scorer = m.scorer(train_seqs, SERVE_LENGTH)
        return evaluate(scorer, data.val_truth, data.r_train, n_items)["ndcg@20"]

    fitted.sequence_hist = model.fit(train_seqs, validate, desc="sasrec")
    fitted.sequence = model
    fitted.seconds["sequence"] = time.perf_counter() - started


def evaluate_models(data: TrainData, fitted: Fitted, dataset: str) -> dict[str, Any]:
    """Full-ranking metrics on the test split (read once, here) for the baselines and both
    GNN models, and for inductive users embedded from their history alone."""
    n_items, r_hist, truth = len(data.items), data.r_hist, data.test_truth
    models = {
        "popularity": evaluate(Popularity(r_hist).scores, truth, r_hist, n_items),
        "itemknn": evaluate(ItemKNN(r_hist, ItemKNNConfig()).scores, truth, r_hist, n_items),
        "bpr_mf": evaluate(fitted.mf.scorer(data.adj_hist), truth, r_hist, n_items),
        "lightgcn": evaluate(fitted.gcn.scorer(data.adj_hist), truth, r_hist, n_items),
    }
    if fitted.filter is not None:
        scorer = fitted.filter.scorer(r_hist)
        models["graph_filter"] = evaluate(scorer, truth, r_hist, n_items)
    if fitted.sequence is not None:  # each user's train + val sequence, as serving reads it
        seqs = sequences(data.history, data.users, data.items)
        scorer = fitted.sequence.scorer(seqs, SERVE_LENGTH)
        models["sequence"] = evaluate(scorer, truth, r_hist, n_items)
    item_emb = fitted.item_emb
    ind_users, ind_hist, ind_truth = inductive_truth(data)
    item_degree = np.asarray(r_hist.sum(axis=0)).ravel()
    ind_vecs = user_vectors_from_history(ind_hist, item_emb, item_degree)
    inductive = evaluate(
        lambda b: (ind_vecs[torch.as_tensor(b)] @ item_emb.T).numpy(), ind_truth, ind_hist, n_items
    )
    metrics: dict[str, Any] = {
        "dataset": dataset,
        "split": data.split.name,
        "models": models,
        "inductive_users": {"heldout_from_history": inductive, "trained": models["lightgcn"]},
    }
    if fitted.filter is not None:
        metrics["graph_filter"] = {**fitted.filter.describe(), "search": fitted.filter.search}
    return metrics


def inductive_truth(data: TrainData) -> tuple[IdMap, sp.csr_matrix, dict[int, set[int]]]:
    """The users held out of the graph: their ids, train+val history [B, I] and test truth."""
    users = IdMap(sorted(data.inductive))
    history = interaction_matrix(data.history, users, data.items)
    return users, history, ground_truth(data.split.test, users, data.items, history)


def graph_space(
    users: IdMap,
    user_emb: torch.Tensor,
    items: IdMap,
    item_emb: torch.Tensor,
    events: pd.DataFrame,
    graph_filter: GraphFilter | None = None,
    sequence: SequenceModel | None = None,
) -> ItemSpace:
    """One model's vectors (and graph filter) as the ranker's model scores read them, as
    api.bundle builds them from an artifact: popularity (distinct users per item) and what each
    user bought or rated, both in ``events`` (what the model trained on)."""
    pop = events.groupby(n.ITEM_ID)[n.USER_ID].nunique().reindex(items.ids).fillna(0)
    return ItemSpace(
        users.index,
        user_emb.numpy(),
        items.index,
        item_emb.numpy(),
        pop.to_numpy(np.float32),
        np.ones(len(items), dtype=bool),
        interaction_matrix(bought(events), users, items),
        graph_filter.weights if graph_filter is not None else None,
        SequenceScorer.of(sequence) if sequence is not None else None,
    )


def bought(events: pd.DataFrame) -> pd.DataFrame:
    """Purchases and ratings: what serving filters out and does not count as news."""
    return events[events[n.EVENT_TYPE].isin([n.EventType.PURCHASE, n.EventType.RATING])]


def fit_ranker(settings: Settings, cfg: TrainConfig, data: TrainData, fitted: Fitted) -> Any:
    """The ranker on validation pairs (train-only model, its GNN score as the API computes it),
    measured on test pairs with the evaluated model (models.ranker_training)."""
    from models.ranker_training import ranker_metrics

    with torch.no_grad():
        fit_user, fit_item = fitted.gcn_train_only.embeddings(data.adj_train)
    categories = data.items_table.drop_duplicates(n.ITEM_ID).set_index(n.ITEM_ID)[n.CATEGORY]
    return ranker_metrics(
        settings,
        data.split,
        categories,
        graph_space(
            data.users,
            fit_user,
            data.items,
            fit_item,
            data.split.train,
            fitted.filter_train,
            fitted.sequence,
        ),
        graph_space(
            data.users,
            fitted.user_emb,
            data.items,
            fitted.item_emb,
            data.history,
            fitted.filter,
            fitted.sequence,
        ),
        cfg.seed,
    )


def text_cold_start(
    data: TrainData,
    catalogue: pd.DataFrame,
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    rng: np.random.Generator,
    catalogue_text: np.ndarray | None = None,
) -> dict[str, Any]:
    """MiniLM title embeddings of the catalogue [C, 384] (``catalogue_text``, or encoded here)
    and the ridge projection into the item space [385, D], fitted on graph items; metrics on
    the held-out cold items (if any)."""
    cold_ids = sorted(data.cold)
    if catalogue_text is None:
        catalogue_text = encode_titles(catalogue)
    if catalogue_text is None:
        return {"metrics": {"note": "no titled items"}, "cold_ids": []}
    from models.text import TextProjection

    cat_ids = IdMap(catalogue[n.ITEM_ID].tolist())
    text_vecs = catalogue_text[[cat_ids.index[i] for i in data.items.ids]]
    cold_text = catalogue_text[[cat_ids.index[i] for i in cold_ids]]
    projection = TextProjection.fit(text_vecs, item_emb.numpy())
    if not cold_ids:
        return {
            "metrics": {"note": "no items held out"},
            "cold_ids": [],
            "embeddings": catalogue_text,
            "projection": projection.weight,
        }
    metrics = cold_item_metrics(
        cold_ids,
        projection(cold_text),
        user_emb,
        data.users,
        data.items_table,
        data.split,
        data.r_hist,
        data.items,
        rng,
    )
    return {
        "metrics": metrics,
        "cold_ids": cold_ids,
        "embeddings": catalogue_text,
        "projection": projection.weight,
    }


def package(
    settings: Settings,
    cfg: TrainConfig,
    gcn_cfg: LightGCNConfig,
    data: TrainData,
    fitted: Fitted,
    metrics: dict[str, Any],
    catalogue: pd.DataFrame,
    text: dict[str, Any],
) -> artifact.Artifact:
    """Everything serving needs, with its manifest (data snapshot, dims, metrics, git sha)."""
    cat_ids = IdMap(catalogue[n.ITEM_ID].tolist())
    segments = attributes = None
    users_path = settings.canonical_dir / cfg.dataset / "users.parquet"
    if users_path.exists():  # demographics, where the dataset has them
        segments, attributes = build_segments(pd.read_parquet(users_path), data.history)
    ranker = (
        metrics["ranker"].pop("model", None) if isinstance(metrics.get("ranker"), dict) else None
    )
    manifest = _manifest(cfg, gcn_cfg, data, metrics, text.get("projection") is not None)
    sequence = sequence_parts(fitted, data.items, cat_ids)
    return artifact.Artifact(
        manifest=manifest,
        users=data.users.ids,
        items=data.items.ids,
        user_embeddings=fitted.user_emb.numpy(),
        item_embeddings=fitted.item_emb.numpy(),
        catalogue=catalogue,
        seen=interaction_matrix(bought(data.history), data.users, cat_ids),
        text_embeddings=text.get("embeddings"),
        text_projection=text.get("projection"),
        cold_items=text.get("cold_ids", []),
        ranker=ranker,
        segments=segments,
        user_attributes=attributes,
        metrics=metrics,
        weights=fitted.gcn.model.state_dict(),
        graph_filter=(
            in_catalogue(fitted.filter.weights, data.items, cat_ids) if fitted.filter else None
        ),
        sequence_weights=sequence[0] if sequence else None,
        sequence_items=sequence[1] if sequence else None,
    )


def sequence_parts(
    fitted: Fitted, items: IdMap, cat_ids: IdMap
) -> tuple[dict[str, torch.Tensor], np.ndarray] | None:
    """The sequence model as the artifact keeps it: its weights and its item table over the
    catalogue (trained rows, else the title's place); None without one."""
    if fitted.sequence_served is not None:
        return fitted.sequence_served
    if fitted.sequence is None:
        return None
    table = catalogue_table(fitted.sequence.item_table(), items, cat_ids, fitted.sequence_init)
    return fitted.sequence.net.state_dict(), table


def in_catalogue(weights: sp.csr_matrix, items: IdMap, catalogue: IdMap) -> sp.csr_matrix:
    """Item-item ``weights`` over ``items`` [I, I] re-indexed to the catalogue's rows [C, C]
    (the rows and columns of catalogue items outside ``items`` are empty)."""
    to_cat = np.array([catalogue.index[i] for i in items.ids], dtype=np.int64)
    coo = weights.tocoo()
    size = len(catalogue)
    return sp.csr_matrix((coo.data, (to_cat[coo.row], to_cat[coo.col])), shape=(size, size))


def _manifest(
    cfg: TrainConfig, gcn_cfg: LightGCNConfig, data: TrainData, metrics: dict[str, Any], text: bool
) -> dict[str, Any]:
    """The artifact's manifest: version, feature service, data snapshot, dims, metrics, sha."""
    events = data.events
    return {
        "version": artifact.new_version(cfg.dataset),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "feature_service": n.RANKER_V1,
        "dataset": {
            "name": cfg.dataset,
            "events": len(events),
            "first_event": str(events[n.EVENT_TIMESTAMP].min()),
            "last_event": str(events[n.EVENT_TIMESTAMP].max()),
        },
        "split": data.split.name,
        "dims": {
            "users": len(data.users),
            "items": len(data.items),
            "embedding": gcn_cfg.embedding_dim,
            "text": 384 if text else None,
        },
        "hyper_parameters": {
            "train": asdict(cfg),
            "lightgcn": gcn_cfg.as_dict(),
            "itemknn": asdict(ItemKNNConfig()),
            "graph_filter": metrics.get("graph_filter", {}).get("l2"),
            "sequence": metrics.get("sequence_config"),
        },
        "metrics": {k: v.get("ndcg@20") for k, v in metrics["models"].items()},
    }


def build_catalogue(items_table: pd.DataFrame, history: pd.DataFrame, items: IdMap) -> pd.DataFrame:
    """item_id, title, category, popularity (distinct users in train+val), in_graph, available
    (the dataset's own flag when it has one; True otherwise)."""
    cat = items_table.drop_duplicates(n.ITEM_ID)
    unlisted = sorted(set(history[n.ITEM_ID]) - set(cat[n.ITEM_ID]))  # events name them only
    cat = pd.concat([cat, pd.DataFrame({n.ITEM_ID: unlisted})], ignore_index=True)
    pop = history.groupby(n.ITEM_ID)[n.USER_ID].nunique()
    out = pd.DataFrame(
        {
            n.ITEM_ID: cat[n.ITEM_ID].astype(str),
            n.TITLE: cat.get(n.TITLE),
            n.CATEGORY: cat.get(n.CATEGORY),
            artifact.POPULARITY: cat[n.ITEM_ID].map(pop).fillna(0).astype(np.int64),
            artifact.IN_GRAPH: cat[n.ITEM_ID].isin(items.index),
            artifact.AVAILABLE: (
                cat[artifact.AVAILABLE].map(lambda v: True if pd.isna(v) else bool(v))
                if artifact.AVAILABLE in cat
                else True
            ),
        }
    )
    return out


def build_segments(
    users_table: pd.DataFrame, history: pd.DataFrame, max_values: int = 40, top: int = 50
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Popular items per demographic segment, for new shoppers whose attributes are known.

    Uses the categorical user attributes with 2..``max_values`` values (Online Retail: country;
    MovieLens: gender, occupation). Returns (segments: attribute, value, item_id, users — the
    ``top`` items of each value by distinct users; user attributes: user_id + those columns).
    """
    attrs = [
        c
        for c in users_table.columns
        if c != n.USER_ID and 2 <= users_table[c].nunique() <= max_values
    ]
    table = users_table[[n.USER_ID, *attrs]].astype(str).drop_duplicates(n.USER_ID)
    joined = history[[n.USER_ID, n.ITEM_ID]].drop_duplicates().merge(table, on=n.USER_ID)
    parts = []
    for attr in attrs:
        counts = joined.groupby([attr, n.ITEM_ID]).size().rename("users").reset_index()
        counts = counts.sort_values([attr, "users"], ascending=[True, False])
        best = counts.groupby(attr).head(top).rename(columns={attr: "value"})
        parts.append(best.assign(attribute=attr))
    columns = ["attribute", "value", n.ITEM_ID, "users"]
    segments = pd.concat(parts)[columns] if parts else pd.DataFrame(columns=columns)
    return segments.reset_index(drop=True), table


def cold_item_metrics(
    cold_ids, cold_emb, user_emb, users, items_table, split, r_hist, items, rng
) -> dict[str, dict[str, float]]:
    """Rank only the cold items for each trained user who touched one in the test period."""
    cold = IdMap(cold_ids)
    seen = sp.csr_matrix((len(users), len(cold)))
    truth = ground_truth(split.test, users, cold, seen)
    cats = items_table.set_index(n.ITEM_ID)[n.CATEGORY]
    warm_cat = (
        pd.Series(np.asarray(r_hist.sum(axis=0)).ravel(), index=items.ids)
        .groupby(cats.reindex(items.ids).fillna(""))
        .sum()
    )
    cat_pop = np.array([warm_cat.get(cats.get(i, ""), 0.0) for i in cold_ids], dtype=np.float32)
    cold_t = torch.from_numpy(np.asarray(cold_emb, dtype=np.float32))
    random_scores = rng.random((len(users), len(cold_ids))).astype(np.float32)
    scorers = {
        "text_projection": lambda b: (user_emb[torch.as_tensor(b)] @ cold_t.T).numpy(),
        "category_popularity": lambda b: np.broadcast_to(cat_pop, (len(b), len(cat_pop))),
        "random": lambda b: random_scores[b],
    }
    return {name: evaluate(fn, truth, seen, len(cold_ids)) for name, fn in scorers.items()}


def plot(path: Path, gcn_hist, mf_hist, models) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(gcn_hist["val_ndcg@20"], label="LightGCN val NDCG@20")
    a.plot(mf_hist["val_ndcg@20"], label="BPR-MF val NDCG@20")
    a.set_xlabel("epoch")
    a.legend()
    a.set_title("validation")
    names = list(models)
    b.bar(names, [models[m]["ndcg@20"] for m in names])
    b.set_title("test NDCG@20 (full ranking)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_table(metrics) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{metrics['dataset']} {metrics['split']}")
    keys = ["recall@10", "recall@20", "ndcg@10", "ndcg@20", "hit@20", "coverage@20"]
    table.add_column("model")
    for k in keys:
        table.add_column(k, justify="right")
    for name, m in metrics["models"].items():
        table.add_row(name, *(f"{m[k]:.4f}" for k in keys))
    Console().print(table)
