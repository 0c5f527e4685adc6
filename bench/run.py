"""Benchmarks -> bench/results/latest.json (flat JSON: one key per figure, plus machine and sha).

Self-contained: starts its own redis-server on a free port, builds a fresh Feast project from
the configured dataset in a temporary folder, and measures, in the same run:
- Feast ``get_online_features`` latency for 1 and 100 users (feature service profile_v1), and
- the physical floor: the same Redis hashes and fields read straight with redis-py HMGET;
- backfill throughput of the Bytewax dataflow (events/second);
- the live job: events/second with one worker and with two processes, the Bytewax
  pass-through ceiling over the same source, and freshness at a fixed offered rate;
- the scoring API against ``feast serve`` (bench/api_bench.py), API fuzzing, bandit replay.
- whether the served list follows clicks (bench/follow_bench.py): views -> live job -> top 20;
- the shop page in headless Chromium (bench/shop_bench.py): first shelf, click to new shelf.
- off-policy estimates (IPW, SNIPS, DR) of Bernoulli-TS's CTR on the Open Bandit Dataset.
- the closed feedback loop (bench/sim_bench.py): clicks, regret and new-item discovery per policy.
Run: ``make bench`` (or ``.venv/bin/python bench/run.py``).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import names as n  # noqa: E402
from core.provenance import git_sha  # noqa: E402
from core.redis_server import RedisServer, free_port  # noqa: E402
from core.settings import get_settings  # noqa: E402

CALLS = 300


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples_s) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def timed(fn, batches: list[list[str]], warmup: int = 20) -> list[float]:
    """Seconds per call of ``fn(batch)`` over ``batches`` (the first ``warmup`` not kept)."""
    out = []
    for i, batch in enumerate(batches):
        t = time.perf_counter()
        fn(batch)
        if i >= warmup:
            out.append(time.perf_counter() - t)
    return out


def build_project(workdir: Path, redis: RedisServer) -> dict[str, float]:
    """Import, backfill (timed), apply and materialize a fresh project under ``workdir``."""
    os.environ.update(
        {
            "IG_DATA_DIR": str(workdir),
            "IG_REDIS_PORT": str(redis.port),
            "IG_FEAST_PROJECT": f"bench_{uuid.uuid4().hex[:8]}",
        }
    )
    get_settings.cache_clear()
    s = get_settings()
    from core.feast_store import feast_apply, materialize, open_store
    from core.importers import import_dataset
    from stream.backfill import run_backfill

    import_dataset(s.dataset, s.shared_data_dir).write(s.canonical_dir / s.dataset)
    report = run_backfill(
        s.canonical_dir / s.dataset / "events.parquet",
        s.offline_dir,
        workdir / "dead_letters",
        batch_rows=s.backfill_batch_rows,
    )
    feast_apply(s)
    materialize(open_store(s), s)
    return {
        "backfill_events": report.events,
        "backfill_seconds": round(report.seconds, 3),
        "backfill_events_per_s": round(report.events_per_s, 1),
        # the last tenth of the log alone: close to the whole-log rate when cost is flat
        "backfill_events_per_s_last10pct": round(report.events_per_s_last10pct, 1),
    }


def online_latency(redis: RedisServer) -> dict[str, float]:
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from core.feast_store import open_store

    s = get_settings()
    store = open_store(s)
    service = store.get_feature_service(n.PROFILE_V1)
    store.get_online_features(  # warm the registry cache
        features=service, entity_rows=[{n.USER_ID: "x"}]
    )
    import pyarrow.parquet as pq

    ids = pq.read_table(s.canonical_dir / s.dataset / "users.parquet")[n.USER_ID].to_pylist()
    rng = random.Random(7)
    views = [n.USER_BEHAVIOR, n.USER_INTEREST]
    fields = [_mmh3(f"{v}:{f}") for v in views for f in n.VIEW_FEATURES[v]]
    fields += [f"_ts:{v}".encode() for v in views]
    client = redis.client()
    version = store.config.entity_key_serialization_version

    def redis_key(user: str) -> bytes:
        key = EntityKey(join_keys=[n.USER_ID], entity_values=[Value(string_val=user)])
        return _redis_key(s.feast_project, key, version)

    assert client.hmget(redis_key(ids[0]), fields)[0] is not None, "materialize wrote nothing"
    out: dict[str, float] = {"features_per_user": len(fields) - len(views)}
    gc.collect()
    gc.freeze()  # keep Feast's ~300k start-up objects out of every later GC pass
    for size in (1, 100):
        batches = [rng.sample(ids, size) for _ in range(CALLS + 20)]
        feast_s = timed(
            lambda users: store.get_online_features(
                features=service, entity_rows=[{n.USER_ID: u} for u in users]
            ),
            batches,
        )

        def floor(users: list[str]) -> None:
            pipe = client.pipeline(transaction=False)
            for u in users:
                pipe.hmget(redis_key(u), fields)
            pipe.execute()

        floor_s = timed(floor, batches)
        f50, f99 = percentiles(feast_s)
        r50, r99 = percentiles(floor_s)
        out |= {
            f"feast_online_p50_ms_{size}": round(f50, 3),
            f"feast_online_p99_ms_{size}": round(f99, 3),
            f"redis_floor_p50_ms_{size}": round(r50, 3),
            f"redis_floor_p99_ms_{size}": round(r99, 3),
            f"feast_over_floor_p50_{size}": round(f50 / r50, 2),
        }
    return out


def serving_artifacts(workdir: Path) -> Path:
    """The trained model the API serves (``artifacts/latest``); without one, a quick model
    (5 epochs) is trained into ``workdir`` so the API figures are still measured."""
    s = get_settings()
    if (s.artifacts_dir / "latest" / "catalogue.parquet").exists():
        return s.artifacts_dir
    from models.lightgcn import LightGCNConfig
    from models.sequence import SequenceConfig
    from models.train import TrainConfig, train

    print("no serving artifact under artifacts/latest: training a quick one (make train)")
    out = workdir / "artifacts"
    quick = LightGCNConfig(max_epochs=5), SequenceConfig(max_epochs=3)
    train(s, TrainConfig(dataset=s.dataset), quick[0], out, seq_cfg=quick[1])
    return out


def model_latency(artifacts: Path, recent: int = 20, calls: int = CALLS) -> dict[str, object]:
    """Per-request model time at serving, ``recent`` recent items per request (the most
    ``user_interest.recent_items`` holds): the sequence model's forward pass and scores over
    the catalogue, and the graph filter's scores (api.bundle, as the recommend pipeline calls
    them), each over ``calls`` requests of random items."""
    import torch

    from api.bundle import Bundle

    torch.set_num_threads(1)  # as in the API process: one request, one core
    bundle = Bundle.load(artifacts / "latest")
    rng = np.random.default_rng(0)
    batches = [
        [bundle.ids[i] for i in rng.choice(len(bundle.ids), recent, replace=False)]
        for _ in range(calls + 20)
    ]
    out: dict[str, object] = {"model_latency_recent_items": recent}
    stranger = "no-such-shopper"
    for name, fn in (
        ("sequence", bundle.sequence_scores),
        ("graph_filter", lambda items: bundle.filter_scores(stranger, items)),
    ):
        if fn(batches[0]) is None:
            out[f"{name}_model_note"] = "the served artifact has no such model"
            continue
        p50, p99 = percentiles(timed(fn, batches))
        out[f"{name}_model_p50_ms"], out[f"{name}_model_p99_ms"] = round(p50, 3), round(p99, 3)
    return out


def quality_figures(artifacts: Path) -> dict[str, object]:
    """The served list's quality as `ig evaluate` measured it for the served artifact (read
    from its metrics.json, not re-run: the replay takes minutes), beside the raw models."""
    metrics = json.loads((artifacts / "latest" / "metrics.json").read_text())
    models = metrics.get("models", {})
    if "served" not in models:
        return {"served_note": "artifacts/latest has no served figures: run `ig evaluate`"}
    out: dict[str, object] = {
        f"{name}_{key.replace('@', '')}": m[key]
        for name, m in models.items()
        for key in ("ndcg@20", "recall@20", "coverage@20")
    }
    out["served_ordered_by"] = models["served"].get("ordered_by")
    out["served_over_best_baseline_ndcg20"] = metrics.get("served_over_best_baseline_ndcg20")
    ranker = metrics.get("ranker", {})
    out["ranker_auc_new_items"] = ranker.get("auc_with_features")
    out["gnn_score_auc_new_items"] = ranker.get("auc_without")
    return out


def main() -> int:
    results: dict[str, object] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu "
        f"python {platform.python_version()}",
        "git_sha": git_sha(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": get_settings().dataset,
        "calls_per_figure": CALLS,
    }
    with tempfile.TemporaryDirectory(prefix="ig-bench-") as tmp:
        redis = RedisServer(free_port(), Path(tmp) / "redis")
        proc = redis.start(daemonize=False)
        try:
            results |= build_project(Path(tmp), redis)
            results |= online_latency(redis)
            from bench.stream_bench import (
                future_event_figures,
                handover_figures,
                stream_figures,
            )

            results |= stream_figures(get_settings())
            results |= handover_figures(get_settings())
            results |= future_event_figures(get_settings())
            from bench.api_bench import api_figures, bandit_figures

            artifacts = serving_artifacts(Path(tmp))
            results["api_model"] = (artifacts / "latest").resolve().name
            results |= quality_figures(artifacts)
            results |= model_latency(artifacts)
            results |= bandit_figures(get_settings(), artifacts)
            results |= api_figures(get_settings(), artifacts)
            from bench.follow_bench import follow_figures  # 6 views -> the top 20 moves?

            results |= follow_figures(get_settings(), artifacts)
            from bench.shop_bench import shop_figures  # the page in Chromium: about a minute

            results |= shop_figures(get_settings(), artifacts, Path(tmp))
            from models.ope import obd_figures  # off-policy estimates on OBD: about a second

            results |= obd_figures(get_settings().shared_data_dir)
            from bench.sim_bench import simulation_figures  # closed loop: about 3 minutes

            results |= simulation_figures(get_settings(), artifacts, redis)
            from bench.retrain_bench import retrain_figures  # a day's incremental cycle: ~2 min

            results |= retrain_figures(get_settings(), artifacts, Path(tmp))
            from bench.forget_bench import forget_figures  # last: it deletes a shopper

            results |= forget_figures(get_settings(), artifacts, redis, Path(tmp))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
    out = ROOT / "bench" / "results" / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
