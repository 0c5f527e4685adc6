"""The scoring API over a real Feast project, a real Redis and a model trained on the slice."""

import json
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from cli.policy import read_own_log
from core import names as n
from core.redis_server import RedisServer, free_port, redis_client
from models.ope import CLICK, own_log_check

pytestmark = pytest.mark.integration
KEY = "test-key-123"
AUTH = {"X-API-Key": KEY}
READ = {"X-API-Key": "test-read-key"}
STAGES = {"query", "candidates", "filter", "hydrate", "score", "select", "decorate"}


@pytest.fixture(scope="module")
def settings(feast_project, trained):
    return feast_project.settings.model_copy(
        update={
            "artifacts_dir": trained.parent,
            "api_key": SecretStr(KEY),
            "read_key": SecretStr(READ["X-API-Key"]),
            "encoder_share": 1.0,  # no rest after an encode (tests/unit/api/test_encoder.py)
            "score_rate_per_s": 1000.0,  # the rate limit has a test (and an app) of its own
            "events_stream": "test:api:events",
            "max_body_bytes": 64_000,
            "log_impressions": False,  # test_impressions_* log to streams of their own
        }
    )


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def artifact(trained):
    users = json.loads((trained / "users.json").read_text())
    catalogue = pd.read_parquet(trained / "catalogue.parquet")
    seen = sp.load_npz(trained / "seen.npz").tocsr()
    cold = json.loads((trained / "cold_items.json").read_text())
    return users, catalogue, seen, cold


def busiest_user(artifact):
    users, _, seen, _ = artifact
    return users[int(np.argmax(np.diff(seen.indptr)))]


def test_health_ready_and_metrics(client, trained):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {
        "ready": True,
        "redis": True,
        "feature_store": True,
        "model": trained.name,
    }
    client.get("/v1/users/17850/profile", headers=READ)
    text = client.get("/metrics").text
    assert 'ig_requests_total{route="/v1/users/{user_id}/profile",status="200"}' in text
    assert f'version="{trained.name}"' in text.split("ig_model_info{")[1].split("}")[0]


def test_profile_reads_the_users_online_features(client):
    body = client.get("/v1/users/17850/profile", headers=READ).json()
    assert body["known"] is True
    assert body["recent_items"] and body["top_categories"]
    total = body["features"][f"{n.USER_BEHAVIOR}__{n.EVENTS_TOTAL}"]
    assert isinstance(total, int) and total > 0


def test_profile_of_unknown_user_is_empty_not_an_error(client):
    body = client.get("/v1/users/nobody-here/profile", headers=READ).json()
    assert body["known"] is False and body["recent_items"] == [] and body["top_categories"] == []
    assert set(body["features"].values()) == {None}


def test_recommend_known_user_runs_every_stage_and_skips_what_they_bought(client, artifact):
    users, catalogue, seen, _ = artifact
    user = busiest_user(artifact)
    body = client.get(f"/v1/recommend/{user}", params={"k": 15, "explore": "off"}).json()
    assert body["known"] is True and body["degraded"] is False
    assert set(body["stages_ms"]) == STAGES
    items = [i["item_id"] for i in body["items"]]
    assert len(items) == len(set(items)) == 15
    bought = set(catalogue[n.ITEM_ID].iloc[seen[users.index(user)].indices])
    recent = set(client.get(f"/v1/users/{user}/profile", headers=READ).json()["recent_items"])
    assert not set(items) & (bought | recent)
    assert not any(i["explored"] for i in body["items"])
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)  # explore off: pure score order
    assert all(i["reason"] for i in body["items"])
    assert any(i["reason"].startswith("because you interacted with") for i in body["items"])


def test_recommend_unknown_user_gets_diverse_popular_items_and_more_exploration(client):
    body = client.get("/v1/recommend/brand-new-shopper", params={"k": 20}).json()
    assert body["known"] is False and body["degraded"] is False
    assert len(body["items"]) == 20
    assert body["explore_share"] == pytest.approx(0.3)  # empty history: the policy's maximum
    explored = sum(i["explored"] for i in body["items"])
    assert 1 <= explored <= 6  # bounded: floor(0.3 * 20)
    categories = {i["category"] for i in body["items"] if not i["explored"]}
    assert len(categories) >= 5


def test_exploration_shrinks_with_history(client, artifact):
    rich = client.get(f"/v1/recommend/{busiest_user(artifact)}").json()["explore_share"]
    new = client.get("/v1/recommend/another-new-shopper").json()["explore_share"]
    assert 0.05 <= rich < new <= 0.3


@pytest.mark.parametrize(
    ("params", "field"),
    [({"k": 0}, "k"), ({"k": 101}, "k"), ({"explore": "lots"}, "explore")],
)
def test_bad_recommend_parameters_are_422_with_a_message(client, params, field):
    r = client.get("/v1/recommend/17850", params=params)
    assert r.status_code == 422
    assert field in r.json()["message"]


def test_score_places_known_cold_and_unknown_items(client, artifact):
    _, catalogue, _, cold = artifact
    warm = catalogue[catalogue["in_graph"]][n.ITEM_ID].iloc[0]
    items = [
        warm,
        cold[0],
        {"item_id": "never-seen-1", "title": "RED HEART T-LIGHT HOLDER"},
        "never-seen-2",
    ]
    body = client.post("/v1/score", json={"user_id": "17850", "items": items}).json()
    got = [(s["item_id"], s["placed_by"]) for s in body["scores"]]
    assert got == [
        (warm, "graph"),
        (cold[0], "text"),
        ("never-seen-1", "text"),
        ("never-seen-2", "none"),
    ]
    assert all(np.isfinite(s["score"]) for s in body["scores"])
    r = client.post("/v1/score", json={"user_id": "17850", "items": []})
    assert r.status_code == 422 and "items" in r.json()["message"]


def test_search_finds_items_by_meaning_and_personalises(client, artifact):
    body = client.get("/v1/search", params={"q": "heart shaped candle holder", "k": 10}).json()
    titles = [i["title"] or "" for i in body["items"]]
    assert len(titles) == 10
    assert sum("HEART" in t or "CANDLE" in t or "T-LIGHT" in t for t in titles) >= 5
    sims = [i["text_similarity"] for i in body["items"]]
    assert sims == sorted(sims, reverse=True)
    personal = client.get(
        "/v1/search", params={"q": "heart", "k": 10, "user_id": busiest_user(artifact)}
    ).json()
    assert personal["user_id"] == busiest_user(artifact) and len(personal["items"]) == 10
    assert client.get("/v1/search", params={"q": ""}).status_code == 422


def test_similar_items_for_warm_and_cold_items(client, artifact):
    _, catalogue, _, cold = artifact
    warm = catalogue[catalogue["in_graph"]][n.ITEM_ID].iloc[0]
    body = client.get(f"/v1/items/{warm}/similar", params={"k": 5}).json()
    assert body["placed_by"] == "graph" and len(body["items"]) == 5
    assert warm not in {i["item_id"] for i in body["items"]}
    sims = [i["similarity"] for i in body["items"]]
    assert sims == sorted(sims, reverse=True)
    body = client.get(f"/v1/items/{cold[0]}/similar", params={"k": 5}).json()
    assert body["placed_by"] == "text" and len(body["items"]) == 5
    r = client.get("/v1/items/no-such-item/similar")
    assert r.status_code == 404 and "unknown item" in r.json()["detail"]


def test_events_need_the_key_and_land_on_the_stream(client, settings):
    bus = redis_client(settings)
    before = bus.xlen(settings.events_stream)
    event = {"user_id": "u1", "item_id": "85123A", "event_type": "view"}
    assert client.post("/v1/events", json=event).status_code == 401
    assert client.post("/v1/events", json=event, headers={"X-API-Key": "nope"}).status_code == 401
    bad = {"events": [event, {**event, "event_type": "teleport"}]}
    r = client.post("/v1/events", json=bad, headers={"X-API-Key": KEY})
    assert r.status_code == 422 and "event_type" in r.json()["message"]
    assert bus.xlen(settings.events_stream) == before  # nothing of a bad batch is written
    r = client.post("/v1/events", json={"events": [event] * 3}, headers={"X-API-Key": KEY})
    assert r.status_code == 202 and r.json()["accepted"] == 3
    assert bus.xlen(settings.events_stream) == before + 3
    _, fields = bus.xrange(settings.events_stream, "-", "+")[-1]
    written = json.loads(fields[b"event"])
    assert written["item_id"] == "85123A" and written["event_timestamp"].endswith("+00:00")
    naive = {**event, "event_timestamp": "2024-05-01T12:00:00"}
    r = client.post("/v1/events", json=naive, headers={"X-API-Key": KEY})
    assert r.status_code == 422 and "no UTC offset" in r.json()["message"]
    ahead = (datetime.now(UTC) + timedelta(hours=23)).isoformat()
    r = client.post(
        "/v1/events",
        json={"events": [event, {**event, "event_timestamp": ahead}]},
        headers={"X-API-Key": KEY},
    )
    assert r.status_code == 422 and "event(s) [1]" in r.json()["detail"]
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()  # inside the clock skew
    r = client.post(
        "/v1/events", json={**event, "event_timestamp": soon}, headers={"X-API-Key": KEY}
    )
    assert r.status_code == 202
    assert bus.xlen(settings.events_stream) == before + 4
    big = {"events": [{**event, "session_id": "x" * 120}] * 1000}
    r = client.post("/v1/events", json=big, headers={"X-API-Key": KEY})
    assert r.status_code == 413


def test_reload_needs_the_key_and_swaps_the_model(client, trained):
    assert client.post("/v1/admin/reload").status_code == 401
    r = client.post("/v1/admin/reload", headers={"X-API-Key": KEY})
    assert r.json() == {"version": trained.name, "previous": trained.name}
    r = client.post("/v1/admin/reload", json={"version": "nope"}, headers={"X-API-Key": KEY})
    assert r.status_code == 404


def logged(bus, stream, request_id, count, timeout_s=10.0):
    """The impression events of answer ``request_id`` once ``count`` are on ``stream``."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = [json.loads(f[b"event"]) for _, f in bus.xrange(stream, "-", "+")]
        mine = [e for e in events if e.get(n.REQUEST_ID) == request_id]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


def test_impressions_are_logged_and_clicks_attributed_to_their_slot(settings, artifact):
    own = settings.model_copy(
        update={"log_impressions": True, "events_stream": f"test:imp:{uuid.uuid4().hex[:8]}"}
    )
    bus = redis_client(own)
    user = busiest_user(artifact)
    with TestClient(create_app(own)) as c:
        body = c.get(f"/v1/recommend/{user}", params={"k": 10, "explore": "0.3"}).json()
        assert body["policy"] == "thompson" and len(body["request_id"]) == 32
        items = body["items"]
        explored = [i for i in items if i["explored"]]
        assert len(explored) == 3 and all(0 < i["propensity"] < 1 for i in explored)
        assert all(i["propensity"] == 1.0 for i in items if not i["explored"])
        shown = logged(bus, own.events_stream, body["request_id"], 10)
        assert [(e[n.ITEM_ID], e[n.POSITION], e[n.PROPENSITY], e[n.EXPLORED]) for e in shown] == [
            (i["item_id"], p, i["propensity"], i["explored"]) for p, i in enumerate(items)
        ]
        assert {e[n.EVENT_TYPE] for e in shown} == {"impression"}
        assert {e[n.USER_ID] for e in shown} == {user}
        # every policy's probability of each slot as served: Thompson's own is its propensity
        # up to the Monte Carlo estimate; greedy would have shown the unexplored slots only
        probs = [e[n.PROPENSITIES] for e in shown]
        assert all(set(p) == {"greedy", "epsilon_greedy", "thompson", "contextual"} for p in probs)
        assert [p["greedy"] for p in probs[:2]] == [1.0, 1.0]
        explored = [i["explored"] for i in items]
        assert all(p["greedy"] == 0.0 for p, ex in zip(probs, explored, strict=True) if ex)
        assert all(0 < p["epsilon_greedy"] < 1 for p in probs)
        assert [p["thompson"] == 1.0 for p in probs] == [not ex for ex in explored]

        click = {"user_id": user, "item_id": items[3]["item_id"], "event_type": "click"}
        r = c.post("/v1/events", json={**click, "request_id": body["request_id"]}, headers=AUTH)
        assert r.status_code == 202
        _, fields = bus.xrange(own.events_stream, r.json()["ids"][0], r.json()["ids"][0])[0]
        written = json.loads(fields[b"event"])
        assert (written[n.POSITION], written[n.POLICY], written[n.PROPENSITY]) == (
            3,
            "thompson",
            items[3]["propensity"],
        )
        before = bus.xlen(own.events_stream)
        stray = {**click, "item_id": "never-shown", "request_id": body["request_id"]}
        r = c.post("/v1/events", json={"events": [click, stray]}, headers=AUTH)
        assert r.status_code == 422 and "event(s) [1]" in r.json()["detail"]
        assert bus.xlen(own.events_stream) == before  # nothing of the batch is written

        ctx = {"k": 10, "explore": "0.3", "policy": "contextual", "device": "mobile"}
        contextual = c.get(f"/v1/recommend/{user}", params=ctx).json()
        assert contextual["policy"] == "contextual"
        assert [0 < i["propensity"] < 1 for i in contextual["items"] if i["explored"]] == [True] * 3
        context = [
            e[n.CONTEXT] for e in logged(bus, own.events_stream, contextual["request_id"], 10)
        ]
        assert all(len(x) == n.CONTEXT_DIM and x[0] == 1.0 and x[5] == 1.0 for x in context)
        assert c.get(f"/v1/recommend/{user}", params={**ctx, "device": "fridge"}).status_code == 422
        greedy = c.get(f"/v1/recommend/{user}", params={"k": 5, "policy": "greedy"}).json()
        assert greedy["policy"] == "greedy" and not any(i["explored"] for i in greedy["items"])
        hits = c.get("/v1/search", params={"q": "heart", "user_id": user, "k": 4}).json()
        assert [e[n.POLICY] for e in logged(bus, own.events_stream, hits["request_id"], 4)] == [
            "search"
        ] * 4
        metrics = c.get("/metrics").text
        assert "ig_impressions_logged_total 29.0" in metrics
        assert 'ig_clicks_total{attributed="true"} 1.0' in metrics
    # ig evaluate-policy --data stream: the log as OPE reads it (search results carry no
    # per-policy probabilities); Thompson's log estimates greedy's CTR
    log = read_own_log("stream", own)
    assert len(log) == 25 and log[CLICK].sum() == 1
    assert sorted(log["policy"].unique()) == ["contextual", "greedy", "thompson"]
    check = own_log_check(log, "thompson", "greedy", n_boot=50)
    assert check.rows == 10 and check.logged is not None and check.logged.value == 0.0


def test_lost_redis_degrades_to_popularity_and_recovers(settings, tmp_path, artifact):
    """A Redis of its own: up -> down (200, degraded) -> up again (recovered by itself). What
    was shown while it was down is logged once it is back."""
    server = RedisServer(free_port(), tmp_path)
    server.start()
    own = settings.model_copy(update={"redis_port": server.port, "log_impressions": True})
    user = busiest_user(artifact)
    try:
        with TestClient(create_app(own)) as c:
            assert c.get(f"/v1/recommend/{user}").json()["degraded"] is False
            server.stop(save=False)
            r = c.get(f"/v1/recommend/{user}", params={"k": 10})
            assert r.status_code == 200
            body = r.json()
            assert body["degraded"] is True and len(body["items"]) == 10
            assert body["policy"] == "popular_fallback"
            assert c.get("/ready").status_code == 503
            assert c.get("/v1/search", params={"q": "heart", "user_id": user}).json()["degraded"]
            assert c.post("/v1/score", json={"user_id": user, "items": ["x"]}).status_code == 200
            assert c.get("/health").status_code == 200
            server.start()
            assert c.get(f"/v1/recommend/{user}").json()["degraded"] is False
            assert "ig_degraded_total" in c.get("/metrics").text
            kept = logged(redis_client(own), own.events_stream, body["request_id"], 10)
            assert [e[n.POSITION] for e in kept] == list(range(10))
            assert "ig_impressions_dropped_total 0.0" in c.get("/metrics").text
    finally:
        server.stop(save=False)
        settings.export_feast_env()


def test_reads_that_expose_a_shopper_need_the_read_or_admin_key(client, settings):
    assert client.get("/v1/users/17850/profile").status_code == 401
    assert client.get("/v1/users/17850/profile", headers={"X-API-Key": "nope"}).status_code == 401
    assert client.get("/v1/users/17850/profile", headers=READ).status_code == 200
    assert client.get("/v1/users/17850/profile", headers=AUTH).status_code == 200
    assert client.delete("/v1/users/17850", headers=READ).status_code == 401  # admin only
    assert client.get("/v1/recommend/17850", params={"k": 3}).status_code == 200  # open
    guarded = settings.model_copy(update={"recommend_needs_key": True, "read_key": None})
    with TestClient(create_app(guarded)) as c:
        assert c.get("/v1/recommend/17850", params={"k": 3}).status_code == 401
        assert c.get("/v1/recommend/17850", params={"k": 3}, headers=AUTH).status_code == 200
        assert c.get("/v1/search", params={"q": "heart", "user_id": "17850"}).status_code == 401
        assert c.get("/v1/search", params={"q": "heart"}).status_code == 200  # not personal
        r = c.get("/v1/users/17850/profile", headers=READ)  # no read key set: admin only
        assert r.status_code == 401
    closed = settings.model_copy(update={"read_key": None, "api_key": None})
    with TestClient(create_app(closed)) as c:
        r = c.get("/v1/users/17850/profile")
        assert r.status_code == 403 and "IG_READ_KEY" in r.json()["detail"]


def test_text_encoding_per_request_is_bounded(client, settings):
    titles = [{"item_id": f"new-{i}", "title": "A" * 500} for i in range(41)]  # 20,500 chars
    r = client.post("/v1/score", json={"user_id": "17850", "items": titles})
    assert r.status_code == 422 and "at most 20000 per request" in r.json()["message"]
    r = client.post("/v1/score", json={"user_id": "17850", "items": titles[:40]})
    assert r.status_code == 200 and len(r.json()["scores"]) == 40
    state = client.app.state.ig
    state.encoder._slots.acquire()  # another request is encoding
    try:
        r = client.post("/v1/score", json={"user_id": "17850", "items": titles[:2]})
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        # a search query is short: its own slot, so long titles do not turn it away
        assert client.get("/v1/search", params={"q": "heart"}).status_code == 200
        assert client.get("/v1/recommend/17850", params={"k": 3}).status_code == 200
    finally:
        state.encoder._slots.release()
    assert (
        client.post("/v1/score", json={"user_id": "17850", "items": titles[:2]}).status_code == 200
    )
    metrics = client.get("/metrics").text
    assert 'ig_encoder_refused_total{reason="busy"} 1.0' in metrics


def test_a_client_over_its_score_rate_gets_429_before_its_body_is_read(settings):
    limited = settings.model_copy(update={"score_rate_per_s": 0.01, "score_burst": 2})
    body = {"user_id": "17850", "items": [{"item_id": "new-1", "title": "B" * 100}]}
    with TestClient(create_app(limited)) as c:
        for _ in range(2):  # the burst
            assert c.post("/v1/score", json=body).status_code == 200
        r = c.post("/v1/score", json=body)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert "/v1/score" in r.json()["detail"]
        # a body that is not even JSON is refused the same way: nothing parsed it
        r = c.post("/v1/score", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 429
        # another client (its own key) has its own bucket; other routes are not limited
        other = c.post("/v1/score", json=body, headers=READ)
        assert other.status_code == 200
        assert c.get("/v1/recommend/17850", params={"k": 3}).status_code == 200
        assert 'ig_rate_limited_total{route="/v1/score"} 2.0' in c.get("/metrics").text


def test_an_incomplete_artifact_is_refused_and_the_serving_one_stays(settings, trained, tmp_path):
    root = tmp_path / "artifacts"
    broken = root / "20990101-000000-broken"
    shutil.copytree(trained, broken)
    (broken / "item_embeddings.npy").unlink()  # a copy that stopped half-way
    (root / "latest").symlink_to(broken.name)
    truncated = root / "20990101-000001-truncated"
    shutil.copytree(trained, truncated)
    data = (truncated / "catalogue.parquet").read_bytes()
    (truncated / "catalogue.parquet").write_bytes(data[: len(data) // 2])
    shutil.copytree(trained, root / trained.name)
    own = settings.model_copy(update={"artifacts_dir": root})
    with TestClient(create_app(own)) as c:  # starts without a model, and says why
        r = c.get("/v1/recommend/17850")
        assert r.status_code == 503 and "no model loaded" in r.json()["detail"]
        ok = c.post("/v1/admin/reload", json={"version": trained.name}, headers=AUTH)
        assert ok.status_code == 200
        for bad in (broken.name, truncated.name):
            r = c.post("/v1/admin/reload", json={"version": bad}, headers=AUTH)
            assert r.status_code == 409, r.text
            assert f"still serving {trained.name}" in r.json()["detail"]
        assert (
            "item_embeddings.npy"
            in c.post("/v1/admin/reload", json={"version": broken.name}, headers=AUTH).json()[
                "detail"
            ]
        )
        assert c.get("/v1/recommend/17850", params={"k": 3}).status_code == 200
