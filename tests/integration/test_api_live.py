"""End to end: events posted to the API -> live dataflow -> Feast online -> the next
recommendation moves toward what the shopper just looked at. Plus schema fuzzing (no 5xx)."""

import json
import uuid

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
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
            "catalogue_key": f"test:{tag}:catalogue",  # the fuzzer puts items
            "dead_letter_stream": f"test:{tag}:dead",
        }
    )
    feast_project.settings.export_feast_env()


def share_of(body, category):
    return sum(i["category"] == category for i in body["items"]) / len(body["items"])


def test_posted_events_move_recommendations_toward_what_was_just_viewed(settings, trained):
    # Ordered by the graph filter's score alone: its row holds the shopper's recent items
    # (online), so six views move it at once. (The slice's tiny models, 16 dimensions and 3
    # epochs, 65 positive ranker rows, choose the GNN score alone, under which this user's top
    # 20 does not move; nor does it under the trees alone now that they also read the model
    # scores: before those, 0 -> 9 slots of the viewed category. On Online Retail the chosen
    # blend moves most shoppers' top 20: bench live_follow_*.)
    only_filter = {"gnn_score": 0.0, "graph_filter_score": 1.0, "sequence_score": 0.0}
    update = {"use_ranker": True, "ranker_weight": 0.0, "ranker_shares": only_filter}
    settings = settings.model_copy(update=update)
    users = json.loads((trained / "users.json").read_text())
    catalogue = pd.read_parquet(trained / "catalogue.parquet")
    in_graph = catalogue[catalogue["in_graph"]]
    sizes = in_graph[n.CATEGORY].value_counts()
    big = list(sizes[sizes >= 25].index)
    assert len(big) >= 3, "the slice should have several well-stocked categories"
    user = users[len(users) // 2]
    params = {"k": 20, "explore": "off"}
    weights = sp.load_npz(trained / "graph_filter.npz").tocsr()
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
    shown_before = {i["item_id"] for i in before["items"]}
    shown_after = [i["item_id"] for i in after["items"]]
    assert len(shown_before - set(shown_after)) >= 5, (before, after)  # the list moved
    assert not set(picks) & set(shown_after)  # just seen: filtered
    # what moved in is what the graph filter relates to the viewed items
    index = {item: j for j, item in enumerate(catalogue[n.ITEM_ID])}
    related = np.asarray(weights[[index[i] for i in picks]].sum(axis=0)).ravel()
    new = [i for i in shown_after if i not in shown_before]
    assert np.mean([related[index[i]] for i in new]) > np.mean(related[related != 0])
    assert all("graph_filter" in i["sources"] for i in after["items"] if i["item_id"] in new)


def test_fuzzing_the_openapi_schema_finds_no_server_error(settings):
    with serving(create_app(settings), free_port()) as base:
        report = fuzz(base, KEY, max_examples=15)
    assert report.server_errors == []
    assert report.cases >= 150
    assert {200, 422} <= set(report.by_status)


def test_a_click_posted_now_changes_what_the_sequence_model_proposes(settings, trained):
    """The transformer reads ``recent_items`` online per request: after one posted click (and
    the live job), the items it proposes are not the ones it proposed before. Candidates from
    the sequence source alone (one GNN candidate, no other sources), every one returned."""
    settings = settings.model_copy(
        update={
            "candidates_gnn": 1,
            "candidates_graph_filter": 0,
            "candidates_other": 0,
            "candidates_sequence": 30,
        }
    )
    users = json.loads((trained / "users.json").read_text())
    catalogue = pd.read_parquet(trained / "catalogue.parquet")
    user = users[len(users) // 3]
    params = {"k": 40, "explore": "off"}

    def proposed(body):
        return {i["item_id"] for i in body["items"] if "sequence" in i["sources"]}

    with TestClient(create_app(settings)) as client:
        before = client.get(f"/v1/recommend/{user}", params=params).json()
        assert len(proposed(before)) >= 20, before
        item = catalogue[catalogue["in_graph"]].nsmallest(1, "popularity")[n.ITEM_ID].iloc[0]
        event = {"user_id": user, "item_id": item, "event_type": "click"}
        r = client.post("/v1/events", json=event, headers={"X-API-Key": KEY})
        assert r.status_code == 202
        run_main(live_flow(settings, idle_stop_s=1.0))
        after = client.get(f"/v1/recommend/{user}", params=params).json()
    assert proposed(after) != proposed(before)
    assert item not in proposed(after)  # just clicked: filtered
