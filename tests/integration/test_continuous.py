"""The interest graph follows the shop: the live catalogue (PUT /v1/items) served at once and
kept across restarts; an incremental cycle that trains on live events, its safe roll-out (a
worse artifact is refused), the API picking up what is promoted, and rollback. Real Redis,
real Feast, the real small model of the ``trained`` fixture."""

import shutil
import time
import uuid
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from api.bundle import GRAPH, TEXT, Bundle
from core import names as n
from core.bus import publish
from models import artifact
from models.incremental import (
    REFUSED,
    IncrementalConfig,
    Outcome,
    all_events,
    roll_out,
    rollback,
    train_incremental,
    trained_until,
)

pytestmark = pytest.mark.integration
KEY = {"X-API-Key": "catalogue-key"}
TITLE = "RED RETROSPOT HANGING LANTERN LAMP"


@pytest.fixture
def project(feast_project, trained, tmp_path):
    """Settings on a copy of the trained artifact (its own artifacts folder, served history,
    event bus and catalogue key), watched every 0.1 s."""
    root = tmp_path / "artifacts"
    root.mkdir()
    shutil.copytree(trained, root / trained.name)
    artifact.point_latest(root, trained.name)
    tag = uuid.uuid4().hex[:8]
    settings = feast_project.settings.model_copy(
        update={
            "artifacts_dir": root,
            "api_key": SecretStr(KEY["X-API-Key"]),
            "events_stream": f"test:{tag}:events",
            "dead_letter_stream": f"test:{tag}:dead",
            "catalogue_key": f"test:{tag}:catalogue",
            "watch_s": 0.1,
            "log_impressions": False,
        }
    )
    yield settings
    feast_project.settings.export_feast_env()


def hit_ids(client, q):
    r = client.get("/v1/search", params={"q": q, "k": 10})
    assert r.status_code == 200, r.text
    return [h["item_id"] for h in r.json()["items"]]


def test_a_put_item_is_served_at_once_and_survives_a_restart(project):
    with TestClient(create_app(project)) as client:
        body = {"title": TITLE, "category": "lantern", "brand": "Acme"}
        assert client.put("/v1/items/NEW-LAMP-1", json=body).status_code == 401  # no key
        assert (
            client.put("/v1/items/NEW-LAMP-1", json={"title": ""}, headers=KEY).status_code == 422
        )
        assert client.put("/v1/items/NEW-LAMP-1", json={"price": 3}, headers=KEY).status_code == 422
        r = client.put("/v1/items/NEW-LAMP-1", json=body, headers=KEY)
        assert r.status_code == 200, r.text
        assert r.json()["items"] == [
            {"item_id": "NEW-LAMP-1", "placed_by": TEXT, "available": True}
        ]
        # searchable, similar-able and in the retrieval index from the next request
        assert "NEW-LAMP-1" in hit_ids(client, "retrospot hanging lantern lamp")
        similar = client.get("/v1/items/NEW-LAMP-1/similar", params={"k": 5})
        assert similar.status_code == 200 and similar.json()["placed_by"] == TEXT
        assert len(similar.json()["items"]) == 5
        state = client.app.state.ig
        ix = state.bundle.index["NEW-LAMP-1"]
        assert state.bundle.retrievable[ix]
        everything = int(state.bundle.retrievable.sum())  # the GNN source's whole index
        assert ix in state.bundle.retrieve(state.bundle.vectors[ix], everything)[0]
        [item] = client.get("/v1/items", params={"ids": "NEW-LAMP-1"}).json()
        assert (item["brand"], item["category"]) == ("Acme", "lantern")
        # out of stock: gone from the next answer; the batch form changes two at once
        known = state.bundle.ids[int(state.bundle.popular[0])]
        batch = {"items": [{"item_id": "NEW-LAMP-1", "available": False}, {"item_id": known}]}
        r = client.put("/v1/items", json=batch, headers=KEY)
        assert r.status_code == 200, r.text
        assert [i["available"] for i in r.json()["items"]] == [False, True]
        assert "NEW-LAMP-1" not in hit_ids(client, "retrospot hanging lantern lamp")
        assert not client.app.state.ig.bundle.retrievable[ix]
        twice = {"items": [{"item_id": "A"}, {"item_id": "A"}]}
        assert client.put("/v1/items", json=twice, headers=KEY).status_code == 422
    with TestClient(create_app(project)) as client:  # a restart: the catalogue is in Redis
        [item] = client.get("/v1/items", params={"ids": "NEW-LAMP-1"}).json()
        assert item["title"] == TITLE
        bundle = client.app.state.ig.bundle
        assert not bundle.available[bundle.index["NEW-LAMP-1"]]
        r = client.put("/v1/items/NEW-LAMP-1", json={"available": True}, headers=KEY)
        assert r.status_code == 200
        assert client.app.state.ig.bundle.titles[bundle.index["NEW-LAMP-1"]] == TITLE
        assert "NEW-LAMP-1" in hit_ids(client, "retrospot hanging lantern lamp")


def live_purchases(project, trained, new_item: str) -> tuple[list[str], list[str]]:
    """After the artifact's last event: 40 known shoppers buy ``new_item`` (first seen in live
    events) with three popular items; then 60 later purchases of popular items (the window).
    Returns (the three items, the buyers)."""
    art = artifact.read(trained)
    start = trained_until(art) + timedelta(hours=1)
    popular = art.catalogue.sort_values(artifact.POPULARITY, ascending=False)
    graph_items = [i for i in popular[n.ITEM_ID] if i in set(art.items)][:40]
    anchors = graph_items[:3]
    buyers = [u for u in art.users if u][:40]
    events, t = [], start
    for user in buyers:
        for item in [*anchors, new_item]:
            t += timedelta(seconds=30)
            events.append(
                {
                    n.USER_ID: user,
                    n.ITEM_ID: item,
                    n.EVENT_TYPE: "purchase",
                    n.EVENT_TIMESTAMP: t.isoformat(),
                }
            )
    rng = np.random.default_rng(0)
    for user in rng.choice([u for u in art.users if u], 60):
        t += timedelta(seconds=30)
        item = graph_items[int(rng.integers(3, len(graph_items)))]
        events.append(
            {
                n.USER_ID: str(user),
                n.ITEM_ID: item,
                n.EVENT_TYPE: "view",
                n.EVENT_TIMESTAMP: t.isoformat(),
            }
        )
    from core.redis_server import redis_client

    publish(redis_client(project), project.events_stream, events, project.event_partitions)
    return anchors, buyers


def test_an_item_first_seen_live_is_a_gnn_candidate_after_one_cycle(project, trained):
    from core.redis_server import redis_client

    anchors, _ = live_purchases(project, trained, "LIVE-NEW-1")
    before = Bundle.load(project.artifacts_dir / "latest")
    assert "LIVE-NEW-1" not in before.index  # unknown to the serving model
    client = redis_client(project)
    outcome = train_incremental(project, client, IncrementalConfig(epochs=3))
    assert outcome.new_events == 220 and outcome.new_items >= 1  # the evaluated base lacks
    # its held-out users and items too
    assert outcome.candidate is not None and outcome.window_users > 0
    assert outcome.ndcg20_before is not None and outcome.ndcg20_after is not None
    assert (artifact.latest_version(project.artifacts_dir) == outcome.candidate) == (
        outcome.accepted
    )
    bundle = Bundle.load(project.artifacts_dir / outcome.candidate)
    ix = bundle.index["LIVE-NEW-1"]
    assert bundle.placed_by[ix] == GRAPH
    # a new shopper who just bought the three items it was bought with: GNN retrieval
    vec = bundle.user_vector("a-new-shopper", anchors, 1.0)
    assert ix in bundle.retrieve(vec, 100)[0].tolist()
    log = (project.artifacts_dir / "retrain.jsonl").read_text().splitlines()
    assert len(log) == 1 and '"LIVE-NEW-1"' not in log[0]
    # what the next cycle finds new: the window this one held out (if it served), else all
    again = train_incremental(project, client, IncrementalConfig(epochs=1))
    assert again.new_events == (outcome.window_events if outcome.accepted else 220)


def test_a_worse_artifact_is_refused_then_a_good_one_is_served_and_rolled_back(project, trained):
    from core.redis_server import redis_client

    live_purchases(project, trained, "LIVE-NEW-2")
    root = project.artifacts_dir
    events = all_events(project, "online-retail", redis_client(project))
    cut = events[n.EVENT_TIMESTAMP].iloc[-60]
    fit, window = events[events[n.EVENT_TIMESTAMP] < cut], events[events[n.EVENT_TIMESTAMP] >= cut]
    art = artifact.read(trained)
    # a broken model: every item's embedding shuffled onto another item
    perm = np.random.default_rng(1).permutation(len(art.items))
    broken = replace(
        art,
        item_embeddings=art.item_embeddings[perm],
        manifest={**art.manifest, "version": "broken-" + art.manifest["version"]},
    )
    broken_path = artifact.save(broken, root, promote=False)
    with TestClient(create_app(project)) as client:
        outcome = Outcome(base=trained.name)
        assert not roll_out(
            project, art, artifact.read(broken_path), root, fit, window, 0.0, outcome
        )
        assert outcome.ndcg20_after < outcome.ndcg20_before
        assert (broken_path / REFUSED).exists()
        assert artifact.latest_version(root) == trained.name
        # the same artifact measured against itself is not worse: served, and the API picks
        # it up by itself (it watches latest)
        same = artifact.save(
            replace(art, manifest={**art.manifest, "version": "same-" + art.manifest["version"]}),
            root,
            promote=False,
        )
        outcome = Outcome(base=trained.name)
        assert roll_out(project, art, artifact.read(same), root, fit, window, 0.0, outcome)
        assert artifact.latest_version(root) == same.name
        assert wait_for(lambda: client.app.state.ig.bundle.version == same.name)
        assert client.get("/v1/recommend/some-user", params={"k": 5}).status_code == 200
        # rollback: the previously served one again, the API follows; nothing before that
        assert rollback(root) == (same.name, trained.name)
        assert wait_for(lambda: client.app.state.ig.bundle.version == trained.name)
        with pytest.raises(ValueError, match="no earlier served artifact"):
            rollback(root)
        # a half-written artifact pointed at by hand is never served: the old one stays
        half = root / "half-written"
        half.mkdir()
        (half / artifact.CATALOGUE).write_bytes(b"")
        artifact.point_latest(root, half.name)
        time.sleep(0.5)
        assert client.app.state.ig.bundle.version == trained.name


def wait_for(check, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_live_catalogue_entries_join_the_next_trained_catalogue(project, trained):
    from core import catalogue
    from core.redis_server import redis_client

    client = redis_client(project)
    catalogue.put(client, project.catalogue_key, [catalogue.Entry("PUT-ONLY-1", TITLE, "lamp")])
    live_purchases(project, trained, "LIVE-NEW-3")
    outcome = train_incremental(project, client, IncrementalConfig(epochs=1))
    cat = pd.read_parquet(project.artifacts_dir / outcome.candidate / artifact.CATALOGUE)
    row = cat[cat[n.ITEM_ID] == "PUT-ONLY-1"].iloc[0]
    assert (row[n.TITLE], row[n.CATEGORY]) == (TITLE, "lamp")
    bundle = Bundle.load(project.artifacts_dir / outcome.candidate)
    assert bundle.placed_by[bundle.index["PUT-ONLY-1"]] == TEXT
