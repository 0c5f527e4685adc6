"""Does the served list follow clicks? (imported by bench/run.py)

On the bench project with the serving artifact: for 8 shoppers spread over the trained users,
the category least present in their top 20 (among categories with 25+ items in the graph)
gets 6 views posted to ``POST /v1/events``; the live job (the real dataflow) drains them into
Feast; the top 20 is asked again (explore off). Figures: the mean share of that category in
the top 20 before and after, and how many shoppers' lists moved toward it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from bytewax.testing import run_main
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core import names as n
from core.settings import Settings

SHOPPERS = 8
VIEWS = 6
KEY = "bench-follow-key"


def _share(body: dict[str, Any], category: str) -> float:
    return sum(i["category"] == category for i in body["items"]) / len(body["items"])


def follow_figures(settings: Settings, artifacts: Path) -> dict[str, object]:
    from api.app import create_app
    from stream.live import live_flow

    tag = uuid.uuid4().hex[:8]
    s = settings.model_copy(
        update={
            "artifacts_dir": artifacts,
            "api_key": SecretStr(KEY),
            "log_impressions": False,
            "events_stream": f"bench:{tag}:follow",
            "dead_letter_stream": f"bench:{tag}:follow-dead",
        }
    )
    latest = artifacts / "latest"
    users = json.loads((latest / "users.json").read_text())
    catalogue = pd.read_parquet(latest / "catalogue.parquet")
    catalogue = catalogue[catalogue["in_graph"]]
    sizes = catalogue[n.CATEGORY].value_counts()
    stocked = list(sizes[sizes >= 25].index)
    step = max(1, len(users) // SHOPPERS)
    shoppers = [users[j] for j in range(step // 2, len(users), step)][:SHOPPERS]
    params = {"k": 20, "explore": "off"}
    plan: dict[str, tuple[str, float]] = {}
    moved, after_shares = 0, []
    with TestClient(create_app(s)) as client:
        weight = getattr(client.app.state.ig.bundle.ranker, "weight", None)
        for user in shoppers:
            before = client.get(f"/v1/recommend/{user}", params=params).json()
            target = min(stocked, key=lambda c: _share(before, c))
            picks = catalogue[catalogue[n.CATEGORY] == target].nlargest(VIEWS, "popularity")
            events = [
                {"user_id": user, "item_id": i, "event_type": "view"} for i in picks[n.ITEM_ID]
            ]
            r = client.post("/v1/events", json={"events": events}, headers={"X-API-Key": KEY})
            r.raise_for_status()
            plan[user] = (target, _share(before, target))
        run_main(live_flow(s, idle_stop_s=1.0))  # the live job drains the stream
        for user, (target, before_share) in plan.items():
            after = client.get(f"/v1/recommend/{user}", params=params).json()
            after_shares.append(_share(after, target))
            moved += after_shares[-1] > before_share
    _drop_streams(s)  # bench data: the forget figure scans this Redis for a shopper later
    return {
        "live_follow_shoppers": len(plan),
        "live_follow_share_before": round(sum(b for _, b in plan.values()) / len(plan), 3),
        "live_follow_share_after": round(sum(after_shares) / len(plan), 3),
        "live_follow_moved": moved,
        "live_follow_ranker_weight": weight,
    }


def _drop_streams(settings: Settings) -> None:
    """The figure's own event and dead-letter streams, and the live job's marks of them."""
    from core.bus import partition_streams
    from core.redis_server import redis_client
    from stream.live import open_marks

    streams = partition_streams(settings.events_stream, settings.event_partitions)
    client = redis_client(settings)
    marks = open_marks(client, settings.events_stream)
    client.delete(*streams, settings.dead_letter_stream, *marks)
