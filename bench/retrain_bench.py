"""Continuous training and the live catalogue on the bench's project (``make bench``).

- ``incremental_train_seconds``: one ``ig train --incremental`` cycle (models.incremental) over
  the live events of one simulated day: the serving recipe's evaluated artifact (it learned
  the log up to the test cut) is the base; the first 24 hours of events after the cut are put
  on a bus of their own as live events; the imported log is cut there too.
  ``full_train_seconds``: the same cycle with LightGCN trained from scratch for the epoch
  count ``ig train`` chose (the full recipe's graph training on the same data), same run.
- ``retrain_cycle_ndcg20_before`` / ``_after``: the serving (base) and the incremental
  artifact on the cycle's held-out window (the newest 20 % of the day), and
  ``retrain_cycle_accepted``; ``retrain_full_ndcg20``: the from-scratch one on that window.
- ``new_item_searchable_ms``: ``PUT /v1/items/{id}`` of a new titled item to the first
  ``/v1/search`` answer that holds it, on a uvicorn API (median of 5 items; ``_max_ms``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests

from bench.api_bench import API_KEY, _env, _wait
from core import names as n
from core.bus import publish
from core.redis_server import free_port, redis_client
from core.settings import ROOT, Settings
from models import artifact
from models.data import time_split
from models.incremental import TRAINED_UNTIL, IncrementalConfig, train_incremental

TITLES = [
    "VINTAGE TEAL ENAMEL COFFEE POT",
    "PINK POLKADOT CHILDRENS UMBRELLA",
    "SET OF 4 WOODLAND OWL COASTERS",
    "GLASS STAR LANTERN TEA LIGHT HOLDER",
    "RETRO SPOT PICNIC BLANKET",
]


def retrain_figures(settings: Settings, artifacts: Path, workdir: Path) -> dict[str, Any]:
    out = day_cycle(settings, artifacts, workdir)
    out |= searchable_figures(settings, artifacts)
    return out


def day_cycle(settings: Settings, artifacts: Path, workdir: Path) -> dict[str, Any]:
    served = (artifacts / artifact.LATEST).resolve()
    evaluated = artifact.evaluated_path(served)
    canonical = settings.canonical_dir / settings.dataset
    events = pd.read_parquet(canonical / "events.parquet")
    cut = time_split(events).test[n.EVENT_TIMESTAMP].min()
    day = events[(events[n.EVENT_TIMESTAMP] >= cut)]
    day = day[day[n.EVENT_TIMESTAMP] < cut + timedelta(days=1)]
    data = workdir / "retrain"
    (data / "canonical" / settings.dataset).mkdir(parents=True, exist_ok=True)
    events[events[n.EVENT_TIMESTAMP] < cut].to_parquet(
        data / "canonical" / settings.dataset / "events.parquet", index=False
    )
    shutil.copy(canonical / "items.parquet", data / "canonical" / settings.dataset)
    results: dict[str, Any] = {"retrain_day_events": len(day)}
    client = redis_client(settings, timeout=60)
    for warm in (True, False):
        root = workdir / f"retrain-artifacts-{'warm' if warm else 'full'}"
        shutil.copytree(evaluated, root / evaluated.name)
        manifest = json.loads((root / evaluated.name / artifact.MANIFEST).read_text())
        manifest[TRAINED_UNTIL] = str(cut - timedelta(microseconds=1))  # it learned up to the cut
        (root / evaluated.name / artifact.MANIFEST).write_text(json.dumps(manifest))
        artifact.point_latest(root, evaluated.name)
        s = settings.model_copy(
            update={
                "data_dir": data,
                "artifacts_dir": root,
                "events_stream": "bench:retrain:events",
                "catalogue_key": "bench:retrain:catalogue",
            }
        )
        if warm:
            client.delete(s.events_stream)
            rows = day[[n.USER_ID, n.ITEM_ID, n.EVENT_TYPE, n.EVENT_TIMESTAMP]].astype(str)
            rows[n.EVENT_TIMESTAMP] = day[n.EVENT_TIMESTAMP].map(lambda t: t.isoformat())
            publish(client, s.events_stream, rows.to_dict("records"), s.event_partitions)
        epochs = json.loads((evaluated / artifact.METRICS).read_text())["best_epochs"]["lightgcn"]
        cfg = IncrementalConfig(warm=warm) if warm else IncrementalConfig(warm=False, epochs=epochs)
        outcome = train_incremental(s, client, cfg)
        if warm:
            results |= {
                "incremental_train_seconds": outcome.seconds,
                "incremental_epochs": cfg.epochs,
                "retrain_cycle_ndcg20_before": outcome.ndcg20_before,
                "retrain_cycle_ndcg20_after": outcome.ndcg20_after,
                "retrain_cycle_accepted": int(outcome.accepted),
                "retrain_cycle_diff_upper95": outcome.ndcg20_diff_upper95,
                "retrain_window_users": outcome.window_users,
                "retrain_new_users": outcome.new_users,
                "retrain_new_items": outcome.new_items,
            }
        else:
            results |= {
                "full_train_seconds": outcome.seconds,
                "full_train_epochs": epochs,
                "retrain_full_ndcg20": outcome.ndcg20_after,
            }
    client.delete("bench:retrain:events")
    # the two artifact folders and the cut log hold every shopper: gone once measured (the
    # forget figure, later, scans the bench's folder for leftovers of one)
    for done in (data, *(workdir / f"retrain-artifacts-{k}" for k in ("warm", "full"))):
        shutil.rmtree(done, ignore_errors=True)
    return results


def searchable_figures(settings: Settings, artifacts: Path) -> dict[str, Any]:
    port = free_port()
    env = {**_env(settings, artifacts), "IG_CATALOGUE_KEY": "bench:retrain:catalogue:api"}
    env["IG_LOG_IMPRESSIONS"] = "false"
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--port", str(port),
         "--workers", "1", "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    samples = []
    try:
        _wait(f"{base}/ready", api)
        with requests.Session() as http:
            for j, title in enumerate(TITLES):
                item = f"bench-new-item-{j}"
                started = time.perf_counter()
                r = http.put(
                    f"{base}/v1/items/{item}",
                    json={"title": title, "category": "bench"},
                    headers={"X-API-Key": API_KEY},
                    timeout=30,
                )
                r.raise_for_status()
                while True:
                    hits = http.get(f"{base}/v1/search", params={"q": title.lower(), "k": 10})
                    if item in [h["item_id"] for h in hits.json()["items"]]:
                        break
                    if time.perf_counter() - started > 30:
                        raise RuntimeError(f"{item} not searchable 30 s after its PUT")
                samples.append((time.perf_counter() - started) * 1000)
    finally:
        api.terminate()
        api.wait(timeout=30)
        redis_client(settings).delete(
            "bench:retrain:catalogue:api", "bench:retrain:catalogue:api:version"
        )
    return {
        "new_item_searchable_ms": round(float(np.median(samples)), 1),
        "new_item_searchable_max_ms": round(max(samples), 1),
    }
