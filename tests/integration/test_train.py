"""`make train` end to end on a real slice: graph, LightGCN, baselines, text, Feast ranker."""

import json

import pandas as pd
import pytest

from core import names as n

pytestmark = pytest.mark.integration
METRICS = {"recall@10", "recall@20", "ndcg@10", "ndcg@20", "hit@20", "coverage@20"}


def test_train_writes_versioned_artifact_with_all_metrics(trained):
    out = trained
    assert (out.parent / "latest").resolve() == out.resolve()
    for name in (
        "lightgcn.pt",
        "item_embeddings.npy",
        "users.json",
        "items.json",
        "text_projection.npy",
        "catalogue.parquet",
        "catalogue_text_embeddings.npy",
        "seen.npz",
        "ranker.pkl",
        "training.png",
        "manifest.json",
    ):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) >= {"lightgcn", "popularity", "itemknn", "bpr_mf"}
    for model in metrics["models"].values():
        assert set(model) >= METRICS and all(0 <= model[k] <= 1 for k in METRICS)
        assert model["users"] > 0
    assert set(metrics["cold_items"]) == {"text_projection", "category_popularity", "random"}
    assert metrics["inductive_users"]["heldout_from_history"]["users"] > 0
    ranker = metrics["ranker"]
    assert ranker["fit_rows"] > 0 and ranker["fit_positives"] > 0 and ranker["test_rows"] > 0
    assert 0.0 <= ranker["auc_with_features"] <= 1.0  # within retrieved candidates: hard
    assert any(f.startswith(f"{n.ITEM_STATS}__") for f in ranker["features"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["feature_service"] == n.RANKER_V1
    assert manifest["hyper_parameters"]["lightgcn"]["embedding_dim"] == 16
    assert len(manifest["git_sha"]) == 40
    assert metrics["epochs"] == 3 and metrics["peak_rss_mb"] > 0


def test_served_list_beats_popularity_on_the_slices_held_out_users(feast_project, trained):
    from api.replay import RATIO, evaluate_served

    metrics = evaluate_served(feast_project.settings, trained)
    models = metrics["models"]
    served, popularity = models["served"], models["popularity"]
    assert served["users"] == popularity["users"] == models["lightgcn"]["users"] > 20
    assert set(served) >= METRICS and served["ordered_by"] in {"served_ranker", "served_retrieval"}
    assert served["ndcg@20"] >= 1.5 * popularity["ndcg@20"]
    assert served["recall@20"] > popularity["recall@20"]
    assert metrics[RATIO] == pytest.approx(
        served["ndcg@20"] / max(models[b]["ndcg@20"] for b in ("popularity", "itemknn", "bpr_mf")),
        abs=1e-3,
    )


def test_served_artifact_knows_every_user_and_item(feast_project, trained, tmp_path):
    from models.lightgcn import LightGCNConfig
    from models.serve_all import train_served
    from models.train import TrainConfig

    settings = feast_project.settings
    cfg = TrainConfig(
        **json.loads((trained / "manifest.json").read_text())["hyper_parameters"]["train"]
    )
    gcn = LightGCNConfig(embedding_dim=16, num_layers=2, max_epochs=3, batch_size=4096, lr=2e-2)
    out = train_served(settings, cfg, gcn, trained, out_root=tmp_path)
    events = pd.read_parquet(settings.canonical_dir / "online-retail" / "events.parquet")
    assert set(json.loads((out / "users.json").read_text())) == set(events[n.USER_ID])
    assert set(json.loads((out / "items.json").read_text())) == set(events[n.ITEM_ID])
    assert json.loads((out / "cold_items.json").read_text()) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["evaluation_artifact"] == trained.name
    evaluated = json.loads((trained / "metrics.json").read_text())
    served = json.loads((out / "metrics.json").read_text())
    assert served["models"] == evaluated["models"] and served["evaluation_artifact"] == trained.name
    assert (out / "ranker.pkl").exists() and (out / "text_projection.npy").exists()
