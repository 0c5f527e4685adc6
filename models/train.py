"""``make train``: interest graph -> LightGCN + baselines + text cold start + ranker -> artifact.

One run, one split, every model measured on it. Writes ``artifacts/<version>/`` (weights, id
maps, embeddings, ranker, ``metrics.json``, ``manifest.json``, ``training.png``) and points
``artifacts/latest`` at it.
"""

from __future__ import annotations

import json
import pickle
import resource
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from core import names as n
from core.provenance import git_sha
from core.settings import Settings
from core.windows import add_read_time_columns
from models.baselines import ItemKNN, Popularity
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
from models.lightgcn import InterestGCN, LightGCNConfig, normalized_adjacency


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "online-retail"
    split: str = "time"  # "time" (global cut) or "leave_last_out"
    cold_item_frac: float = 0.05  # items held out of the graph entirely (text cold start)
    inductive_user_frac: float = 0.1  # users held out of the graph (embedded from history)
    ranker_pairs: int = 3000
    ranker: bool = True
    edge_half_life_days: float = 60.0  # recency of graph edges (behaviour-weighted)
    refit: bool = True  # after early stopping on validation, retrain on train+val
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


def train(
    settings: Settings, cfg: TrainConfig, gcn_cfg: LightGCNConfig, out_root: Path | None = None
) -> Path:
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    canonical = settings.canonical_dir / cfg.dataset
    events = load_events(canonical)
    items_table = pd.read_parquet(canonical / "items.parquet")
    split: Split = (
        leave_last_out(events) if cfg.split == "leave_last_out" else global_time_split(events)
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
    val_truth = ground_truth(split.val, users, items, r_train)
    test_truth = ground_truth(split.test, users, items, r_hist)
    n_items = len(items)
    print(
        f"{cfg.dataset}: {len(users)} users, {n_items} items, {r_train.nnz} train / "
        f"{r_hist.nnz} train+val edges; {len(val_truth)} val / {len(test_truth)} test users; "
        f"held out {len(cold)} cold items, {len(inductive)} inductive users"
    )

    metrics: dict[str, object] = {"dataset": cfg.dataset, "split": split.name, "models": {}}
    models: dict[str, dict[str, float]] = {}
    models["popularity"] = evaluate(Popularity(r_hist).scores, test_truth, r_hist, n_items)
    models["itemknn"] = evaluate(ItemKNN(r_hist).scores, test_truth, r_hist, n_items)

    # The graph: behaviour-weighted, recency-decayed user-item edges (positives stay binary).
    adj_train = normalized_adjacency(
        edge_weights(split.train, users, items, cfg.edge_half_life_days)
    )
    adj_hist = normalized_adjacency(edge_weights(history, users, items, cfg.edge_half_life_days))

    def fit(layers: int, name: str) -> tuple[InterestGCN, InterestGCN, dict[str, list[float]]]:
        """Early-stop on validation, then (cfg.refit) refit on train+val for the best epoch
        count, as the baselines see train+val too. Returns (train-only, final, history)."""
        conf = LightGCNConfig(**{**gcn_cfg.as_dict(), "num_layers": layers})
        model = InterestGCN(len(users), n_items, 0, conf)
        hist = model.fit(
            r_train,
            adj_train,
            desc=name,
            validate=lambda m: evaluate(m.scorer(adj_train), val_truth, r_train, n_items)[
                "ndcg@20"
            ],
        )
        if not cfg.refit:
            return model, model, hist
        best_epochs = int(np.argmax(hist["val_ndcg@20"])) + 1
        final = InterestGCN(len(users), n_items, 0, conf)
        final.fit(r_hist, adj_hist, epochs=best_epochs, desc=f"{name} refit")
        return model, final, hist

    _, mf, mf_hist = fit(0, "bpr_mf")
    models["bpr_mf"] = evaluate(mf.scorer(adj_hist), test_truth, r_hist, n_items)
    gcn_train_only, gcn, gcn_hist = fit(gcn_cfg.num_layers, "lightgcn")
    models["lightgcn"] = evaluate(gcn.scorer(adj_hist), test_truth, r_hist, n_items)
    metrics["models"] = models
    with torch.no_grad():
        user_emb, item_emb = gcn.embeddings(adj_hist)

    # Inductive users: never in the graph, embedded from their train+val history only.
    ind_users = IdMap(sorted(inductive))
    ind_hist = interaction_matrix(history, ind_users, items)
    ind_truth = ground_truth(split.test, ind_users, items, ind_hist)
    item_degree = np.asarray(r_hist.sum(axis=0)).ravel()
    ind_vecs = user_vectors_from_history(ind_hist, item_emb, item_degree)
    metrics["inductive_users"] = {
        "heldout_from_history": evaluate(
            lambda b: (ind_vecs[torch.as_tensor(b)] @ item_emb.T).numpy(),
            ind_truth,
            ind_hist,
            n_items,
        ),
        "trained": models["lightgcn"],
    }

    # The serving catalogue: every item of the dataset, with its training popularity.
    catalogue = build_catalogue(items_table, history, items)
    cat_ids = IdMap(catalogue[n.ITEM_ID].tolist())

    # Cold items: placed in item space by their text alone.
    cold_ids = sorted(cold)
    catalogue_text, projection = None, None
    if cold_ids:
        from models.text import TextEncoder, TextProjection

        encoder = TextEncoder()
        catalogue_text = encoder.encode(catalogue[n.TITLE].fillna("").tolist(), progress=True)
        text_vecs = catalogue_text[[cat_ids.index[i] for i in items.ids]]
        cold_text = catalogue_text[[cat_ids.index[i] for i in cold_ids]]
        projection = TextProjection.fit(text_vecs, item_emb.numpy())
        metrics["cold_items"] = cold_item_metrics(
            cold_ids, projection(cold_text), user_emb, users, items_table, split, r_hist, items, rng
        )
    else:
        metrics["cold_items"] = {"note": "no titled items to hold out"}

    if cfg.ranker:
        metrics["ranker"] = ranker_metrics(
            settings, split, users, items, items_table, gcn_train_only, adj_train, adj_hist, cfg
        )
    metrics["epoch_seconds"] = round(float(np.mean(gcn_hist["epoch_seconds"])), 3)
    metrics["epochs"] = len(gcn_hist["loss"])
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    metrics["peak_rss_mb"] = round(_peak_rss_mb(), 1)

    version = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{cfg.dataset}"
    out_root = out_root or settings.artifacts_dir  # where the API looks (IG_ARTIFACTS_DIR)
    out = out_root / version
    out.mkdir(parents=True)
    torch.save(gcn.model.state_dict(), out / "lightgcn.pt")
    np.save(out / "user_embeddings.npy", user_emb.numpy())
    np.save(out / "item_embeddings.npy", item_emb.numpy())
    (out / "users.json").write_text(json.dumps(users.ids))
    (out / "items.json").write_text(json.dumps(items.ids))
    catalogue.to_parquet(out / "catalogue.parquet", index=False)
    if (canonical / "users.parquet").exists():  # demographics, where the dataset has them
        users_table = pd.read_parquet(canonical / "users.parquet")
        segments, attributes = build_segments(users_table, history)
        if len(segments):
            segments.to_parquet(out / "segments.parquet", index=False)
            attributes.to_parquet(out / "user_attributes.parquet", index=False)
    bought = history[history[n.EVENT_TYPE].isin([n.EventType.PURCHASE, n.EventType.RATING])]
    sp.save_npz(out / "seen.npz", interaction_matrix(bought, users, cat_ids))
    if projection is not None and catalogue_text is not None:
        np.save(out / "catalogue_text_embeddings.npy", catalogue_text)
        np.save(out / "text_projection.npy", projection.weight)
        (out / "cold_items.json").write_text(json.dumps(cold_ids))
    if isinstance(metrics.get("ranker"), dict) and "model" in metrics["ranker"]:
        with open(out / "ranker.pkl", "wb") as f:
            pickle.dump(metrics["ranker"].pop("model"), f)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    plot(out / "training.png", gcn_hist, mf_hist, models)
    manifest = {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "feature_service": n.RANKER_V1,
        "dataset": {
            "name": cfg.dataset,
            "events": len(events),
            "first_event": str(events[n.EVENT_TIMESTAMP].min()),
            "last_event": str(events[n.EVENT_TIMESTAMP].max()),
        },
        "split": split.name,
        "dims": {
            "users": len(users),
            "items": n_items,
            "embedding": gcn_cfg.embedding_dim,
            "text": 384 if projection is not None else None,
        },
        "hyper_parameters": {"train": asdict(cfg), "lightgcn": gcn_cfg.as_dict()},
        "metrics": {k: v.get("ndcg@20") for k, v in models.items()},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    latest = out_root / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(version)
    print_table(metrics)
    print(f"artifact: {out}")
    return out


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
            "popularity": cat[n.ITEM_ID].map(pop).fillna(0).astype(np.int64),
            "in_graph": cat[n.ITEM_ID].isin(items.index),
            "available": cat["available"].fillna(True).astype(bool) if "available" in cat else True,
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


def ranker_metrics(settings, split, users, items, items_table, gcn, adj_train, adj_hist, cfg):
    """Point-in-time ranker_v1 features from Feast + GNN score; AUC with and without them.

    The GNN score comes from the train-only model, so validation pairs (the ranker's training
    data) were never edges it trained on."""
    from sklearn.metrics import roc_auc_score

    from core.feast_store import open_store
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

    if not (settings.offline_dir / n.ITEM_STATS).exists():
        return {"note": "no offline store: run `make backfill apply` first"}
    store = open_store(settings)
    service = store.get_feature_service(n.RANKER_V1)
    categories = items_table.drop_duplicates(n.ITEM_ID).set_index(n.ITEM_ID)[n.CATEGORY]

    def frame(events: pd.DataFrame, adj: torch.Tensor, seed: int) -> pd.DataFrame:
        known = events[events[n.USER_ID].isin(users.index) & events[n.ITEM_ID].isin(items.index)]
        with torch.no_grad():
            u_emb, i_emb = gcn.embeddings(adj)
        rng = np.random.default_rng(seed)
        item_ids = np.asarray(items.ids, dtype=object)

        def retrieved(batch: pd.Series) -> np.ndarray:
            """One of each user's top-100 retrieved items (what the API would rank)."""
            scores = u_emb[torch.as_tensor(users.encode(batch))] @ i_emb.T
            depth = min(100, len(item_ids))
            top = torch.topk(scores, depth, dim=1).indices.numpy()
            return item_ids[top[np.arange(len(top)), rng.integers(0, depth, len(top))]]

        pairs = labelled_pairs(known, items.ids, cfg.ranker_pairs, seed, hard=retrieved)
        u = torch.as_tensor(users.encode(pairs[n.USER_ID]))
        i = torch.as_tensor(items.encode(pairs[n.ITEM_ID]))
        pairs[GNN_SCORE] = (u_emb[u] * i_emb[i]).sum(-1).numpy()
        got = store.get_historical_features(
            entity_df=pairs, features=service, full_feature_names=True
        ).to_df()
        frame = restore_dropped(pairs, got)
        # windowed counts as of each label's time, by the same function the API uses online
        epoch = pd.Timestamp(0, tz="UTC")
        label_us = ((frame[n.EVENT_TIMESTAMP] - epoch) // pd.Timedelta(microseconds=1)).tolist()
        frame = frame.assign(**add_read_time_columns(frame.to_dict("list"), label_us))
        frame[CATEGORY_AFFINITY] = category_affinity(
            frame[TOP_CATEGORIES].tolist(),
            frame[TOP_CATEGORY_SCORES].tolist(),
            categories.reindex(frame[n.ITEM_ID]).tolist(),
        )
        return frame

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
