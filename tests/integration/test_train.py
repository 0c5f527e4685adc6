"""`make train` end to end on a real slice: graph, LightGCN, baselines, text, Feast ranker."""

import json

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
        "ranker.skops",
        "ranker.json",
        "training.png",
        "manifest.json",
    ):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"lightgcn", "popularity", "itemknn", "bpr_mf"}
    for model in metrics["models"].values():
        assert set(model) >= METRICS and all(0 <= model[k] <= 1 for k in METRICS)
        assert model["users"] > 0
    assert set(metrics["cold_items"]) == {"text_projection", "category_popularity", "random"}
    assert metrics["inductive_users"]["heldout_from_history"]["users"] > 0
    ranker = metrics["ranker"]
    assert ranker["fit_pairs"] == ranker["test_pairs"] == 600  # no pair lost in Feast's join
    assert 0.5 < ranker["auc_with_features"] <= 1.0
    assert any(f.startswith(f"{n.ITEM_STATS}__") for f in ranker["features"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["feature_service"] == n.RANKER_V1
    assert manifest["hyper_parameters"]["lightgcn"]["embedding_dim"] == 16
    assert len(manifest["git_sha"]) == 40
    assert metrics["epochs"] == 3 and metrics["peak_rss_mb"] > 0
