"""End to end: events posted to the API -> live dataflow -> Feast online -> the next
recommendation moves toward what the shopper just looked at. Plus schema fuzzing (no 5xx)."""

import json
import uuid

import pandas as pd
import pytest
from bytewax.testing import run_main
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from api.fuzz import fuzz, serving
from core import names as n
from core.redis_server import free_port
from stream.live import live_flow

pytestmark = pytest.mark.integration
KEY = "live-test-key"


@pytest.fixture
def settings(feast_project, trained):
    tag = uuid.uuid4().hex[:8]
    yield feast_project.settings.model_copy(
        update={
            "artifacts_dir": trained.parent,
            "api_key": SecretStr(KEY),
            "events_stream": f"test:{tag}:events",
            "dead_letter_stream": f"test:{tag}:dead",
        }
    )
    feast_project.settings.export_feast_env()


def share_of(body, category):
    return sum(i["category"] == category for i in body["items"]) / len(body["items"])


def test_posted_events_move_recommendations_toward_their_category(settings, trained):
    # The ranker's trees alone (category affinity from the live top categories). The slice's
    # tiny model (16 dimensions, 3 epochs, 19 validation users) chooses a blend of 0.4 with the
    # GNN score, under which this user's top 20 did not move (share 0 -> 0); on Online Retail
    # the chosen blend (0.7) moves 7 of 8 shoppers' top 20 (bench: live_follow_*).
    settings = settings.model_copy(update={"use_ranker": True, "ranker_weight": 1.0})
    users = json.loads((trained / "users.json").read_text())
    catalogue = pd.read_parquet(trained / "catalogue.parquet")
    in_graph = catalogue[catalogue["in_graph"]]
    sizes = in_graph[n.CATEGORY].value_counts()
    big = list(sizes[sizes >= 25].index)
    assert len(big) >= 3, "the slice should have several well-stocked categories"
    user = users[len(users) // 2]
    params = {"k": 20, "explore": "off"}
    with TestClient(create_app(settings)) as client:
        before = client.get(f"/v1/recommend/{user}", params=params).json()
        target = min(big, key=lambda c: share_of(before, c))
        picks = in_graph[in_graph[n.CATEGORY] == target].nlargest(6, "popularity")[n.ITEM_ID]
        events = [{"user_id": user, "item_id": i, "event_type": "view"} for i in picks]
        r = client.post("/v1/events", json={"events": events}, headers={"X-API-Key": KEY})
        assert r.status_code == 202

        run_main(live_flow(settings, idle_stop_s=1.0))  # the live job drains the stream

        profile = client.get(f"/v1/users/{user}/profile", headers={"X-API-Key": KEY}).json()
        assert profile["recent_items"][: len(picks)] == list(reversed(picks.tolist()))
        after = client.get(f"/v1/recommend/{user}", params=params).json()
    assert after["known"] and not after["degraded"]
    # At least 4 more of the 20 slots in that category (measured here: 0 -> 9).
    assert share_of(after, target) >= share_of(before, target) + 0.2, (target, before, after)
    assert not set(picks) & {i["item_id"] for i in after["items"]}  # just seen: filtered
    assert any(i["reason"].startswith("because you interacted with") for i in after["items"])


def test_fuzzing_the_openapi_schema_finds_no_server_error(settings):
    with serving(create_app(settings), free_port()) as base:
        report = fuzz(base, KEY, max_examples=15)
    assert report.server_errors == []
    assert report.cases >= 150
    assert {200, 422} <= set(report.by_status)
