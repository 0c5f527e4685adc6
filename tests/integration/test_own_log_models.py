"""Every model on a shop's own canonical log, as a user would bring one: item ids that are
plain integers, long item texts (hundreds of words), no categories, histories from one event
to thousands. ``ig import --path`` then ``ig train`` (no Feast ranker here: the models)."""

import json

import numpy as np
import pandas as pd
import pytest

from core.importers import import_event_log
from models.lightgcn import LightGCNConfig
from models.sequence import SequenceConfig
from models.train import TrainConfig, train

pytestmark = pytest.mark.integration
WORDS = [
    "soft",
    "warm",
    "cotton",
    "linen",
    "oak",
    "steel",
    "glass",
    "blue",
    "green",
    "red",
    "small",
    "large",
    "classic",
    "modern",
]


def _log(tmp_path):
    rng = np.random.default_rng(0)
    n_items = 150
    rows = []
    start = pd.Timestamp("2024-01-01", tz="UTC")
    sizes = [1, 2, 3, 2500] + rng.integers(5, 60, 300).tolist()  # one to thousands
    for u, size in enumerate(sizes):
        group = rng.integers(0, 5)  # shoppers keep to one of 5 groups of 30 items, mostly
        items = np.where(
            rng.random(size) < 0.8,
            group * 30 + rng.integers(0, 30, size),
            rng.integers(0, 150, size),
        )
        times = start + pd.to_timedelta(np.sort(rng.integers(0, 90 * 86_400, size)), unit="s")
        for item, t in zip(items.tolist(), times, strict=True):
            rows.append(
                {
                    "user_id": 100_000 + u,
                    "item_id": item,
                    "event_type": "purchase",
                    "event_timestamp": t.isoformat(),
                }
            )
    events = tmp_path / "events.csv"
    pd.DataFrame(rows).to_csv(events, index=False)
    titles = [
        " ".join(rng.choice(WORDS, 300).tolist()) + f" group {i // 30}" for i in range(n_items)
    ]
    items = tmp_path / "items.csv"
    pd.DataFrame({"item_id": range(n_items), "title": titles}).to_csv(items, index=False)
    return events, items


def test_every_model_trains_on_an_own_log_with_integer_ids_long_texts_and_no_categories(
    feast_project, tmp_path
):
    events_csv, items_csv = _log(tmp_path)
    result = import_event_log(events_csv, items_csv)
    settings = feast_project.settings.model_copy(update={"data_dir": tmp_path / "data"})
    result.write(settings.canonical_dir / "shop")
    cfg = TrainConfig(dataset="shop", ranker=False, refit=False)
    gcn = LightGCNConfig(embedding_dim=16, max_epochs=3, batch_size=4096, lr=2e-2)
    seq = SequenceConfig(dim=16, layers=1, heads=1, max_epochs=3)
    out = train(settings, cfg, gcn, out_root=tmp_path / "artifacts", seq_cfg=seq)
    metrics = json.loads((out / "metrics.json").read_text())
    models = metrics["models"]
    assert {"graph_filter", "sequence", "lightgcn", "itemknn"} <= set(models)
    # the items come in groups the shoppers keep to: every model beats popularity
    for name in ("graph_filter", "sequence", "lightgcn"):
        assert models[name]["ndcg@20"] > models["popularity"]["ndcg@20"], (name, models)
    catalogue = pd.read_parquet(out / "catalogue.parquet")
    assert catalogue["category"].isna().all() and catalogue["item_id"].str.isdigit().all()
    table = np.load(out / "sequence_items.npy")
    assert table.shape[0] == len(catalogue) and np.isfinite(table).all()
