"""Shared fixtures. Integration fixtures start a REAL redis-server; failing to do so fails."""

from __future__ import annotations

import gzip
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.redis_server import RedisServer, free_port
from core.settings import ROOT, Settings, get_settings

RETAIL = ROOT.parent / "shared" / "data" / "online-retail" / "online_retail_all.csv.gz"
SLICE_ROWS = 25_000  # about two weeks of Online Retail: enough users with many events


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    proc = server.start(daemonize=False)  # raises RedisStartError: the test errors, never skips
    assert proc is not None
    yield server
    proc.terminate()
    proc.wait(timeout=10)


@dataclass(frozen=True)
class FeastProject:
    settings: Settings
    redis: RedisServer


@pytest.fixture(scope="session")
def feast_project(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[FeastProject]:
    """A fresh Feast project over a real slice of Online Retail: imported, backfilled by the
    Bytewax dataflow, applied with the real `feast` CLI, materialized into the test Redis."""
    from core.feast_store import feast_apply, materialize, open_store
    from core.importers import import_online_retail
    from stream.backfill import run_backfill

    data_dir = tmp_path_factory.mktemp("data")
    env = {
        "IG_DATA_DIR": str(data_dir),
        "IG_REDIS_PORT": str(redis_server.port),
        "IG_FEAST_PROJECT": f"itest_{uuid.uuid4().hex[:10]}",
        "IG_DATASET": "online-retail",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    settings = get_settings()

    sliced = data_dir / "retail_slice.csv.gz"
    with gzip.open(RETAIL, "rt") as src, gzip.open(sliced, "wt") as dst:
        for i, line in enumerate(src):
            if i > SLICE_ROWS:
                break
            dst.write(line)
    import_online_retail(sliced).write(settings.canonical_dir / "online-retail")
    run_backfill(
        settings.canonical_dir / "online-retail" / "events.parquet",
        settings.offline_dir,
        data_dir / "dead_letters",
        progress=False,
    )
    feast_apply(settings)
    materialize(open_store(settings), settings)
    yield FeastProject(settings, redis_server)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def trained(feast_project: FeastProject, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained through Feast on the slice (artifacts/<version> + latest)."""
    from models.lightgcn import LightGCNConfig
    from models.sequence import SequenceConfig
    from models.train import TrainConfig, train

    cfg = TrainConfig(dataset="online-retail", cold_item_frac=0.1)
    gcn = LightGCNConfig(  # small and fast: 3 epochs, so a higher learning rate
        embedding_dim=16, num_layers=2, max_epochs=3, batch_size=4096, lr=2e-2
    )
    seq = SequenceConfig(dim=16, layers=1, heads=1, max_epochs=3)  # small and fast too
    out = tmp_path_factory.mktemp("artifacts")
    return train(feast_project.settings, cfg, gcn, out_root=out, seq_cfg=seq)


@pytest.fixture(scope="session")
def trained_gnn_only(feast_project: FeastProject, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same small model without the graph filter and the sequence model (``ig train
    --no-graph-filter --no-sequence``): the ranker's trees read the Feast features, the
    category affinity and the GNN score only."""
    from models.lightgcn import LightGCNConfig
    from models.train import TrainConfig, train

    cfg = TrainConfig(
        dataset="online-retail", cold_item_frac=0.1, graph_filter=False, sequence=False
    )
    gcn = LightGCNConfig(embedding_dim=16, num_layers=2, max_epochs=3, batch_size=4096, lr=2e-2)
    out = tmp_path_factory.mktemp("artifacts-gnn-only")
    return train(feast_project.settings, cfg, gcn, out_root=out)
