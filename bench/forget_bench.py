"""Forgetting a shopper on the bench's Online Retail project (``make bench``): how long
``stream.forget.forget_user`` takes over every store and a copy of the serving artifact, and
what a scan of Redis, the data folder and the artifact copy still finds of them (must be 0)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from core import names as n
from core.redis_server import RedisServer
from core.settings import Settings


def busiest_shopper(settings: Settings) -> str:
    """The shopper with the most events whose id is no item's id (a scan for an id that is
    also an item's would count the item)."""
    events = pq.read_table(settings.canonical_dir / settings.dataset / "events.parquet")
    items = set(events[n.ITEM_ID].to_pylist())
    counts = events.group_by(n.USER_ID).aggregate([(n.USER_ID, "count")]).to_pydict()
    ranked = sorted(zip(counts[f"{n.USER_ID}_count"], counts[n.USER_ID], strict=True))
    return next(u for _, u in reversed(ranked) if u not in items)


def forget_figures(
    settings: Settings, artifacts: Path, redis: RedisServer, workdir: Path
) -> dict[str, Any]:
    from core.feast_store import open_store
    from models.artifact import forget_user as forget_in_artifacts
    from stream.forget import forget_user, leftovers

    # the live-job figures' own small projects (bench/stream_bench.py) sit inside this data
    # folder: other projects, done with, that this project's forget does not cover
    shutil.rmtree(settings.data_dir / "stream-bench", ignore_errors=True)
    if artifacts.resolve().is_relative_to(settings.data_dir.resolve()):
        copy = artifacts  # the bench's own quick model (bench.run.serving_artifacts)
    else:
        copy = workdir / "forget-artifacts"  # never the user's own artifacts
        served = (artifacts / "latest").resolve()
        shutil.copytree(served, copy / served.name)
        (copy / "latest").symlink_to(served.name)
    user = busiest_shopper(settings)
    client = redis.client(timeout=60)
    before = sum(leftovers(settings, client, user, copy).values())
    record = forget_user(
        settings,
        client,
        open_store(settings),
        user,
        also=[("artifacts", lambda: forget_in_artifacts(copy, user))],
    )
    live_pass = 0.0
    if record.live_job == "queued":
        # a live job's group reads this stream (the shop and simulation figures ran one): one
        # pass of the job drops its state and deletes the control entry, as in production
        from bytewax.testing import run_main

        from stream.live import live_flow

        started = time.monotonic()
        run_main(live_flow(settings, idle_stop_s=1.0))
        live_pass = time.monotonic() - started
    left = leftovers(settings, client, user, copy)
    return {
        "forget_seconds": record.seconds,
        "forget_live_job": record.live_job,
        "forget_live_pass_seconds": round(live_pass, 1),
        "forget_hits_before": before,
        "forget_leftover_hits": sum(left.values()),
        "forget_leftover_places": sorted(left)[:10],
        "forget_removed": record.removed,
    }
