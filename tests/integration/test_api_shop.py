"""The endpoints the shop page reads: catalogue, categories, shoppers, item names, the live
job's progress; and the page itself, served by the API. Real Redis, Feast and model."""

import json
import uuid

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import SHOP_DIR, create_app
from core import names as n
from core.bus import heartbeat

pytestmark = pytest.mark.integration
KEY = "shop-api-key"


@pytest.fixture(scope="module")
def settings(feast_project, trained):
    return feast_project.settings.model_copy(
        update={
            "artifacts_dir": trained.parent,
            "api_key": SecretStr(KEY),
            "events_stream": f"test:shop:{uuid.uuid4().hex[:8]}",
            "catalogue_key": f"test:shop:{uuid.uuid4().hex[:8]}:catalogue",
            "log_impressions": False,
        }
    )


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def test_shop_page_and_its_assets_are_served_small(client):
    page = client.get("/shop/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="shop.js" defer>' in page.text
    assert client.get("/shop/shop.js").status_code == 200
    assert client.get("/shop/shop.css").headers["content-type"].startswith("text/css")
    assert sum(p.stat().st_size for p in SHOP_DIR.iterdir()) < 200_000


def test_catalogue_pages_most_popular_first_and_filters_by_category(client, trained):
    catalogue = pd.read_parquet(trained / "catalogue.parquet")
    first = client.get("/v1/catalogue", params={"limit": 5}).json()
    assert first["total"] == int(catalogue["available"].sum())
    pops = [i["popularity"] for i in first["items"]]
    assert pops == sorted(pops, reverse=True) and len(pops) == 5
    second = client.get("/v1/catalogue", params={"limit": 5, "offset": 5}).json()
    assert not {i["item_id"] for i in first["items"]} & {i["item_id"] for i in second["items"]}

    cats = client.get("/v1/categories").json()
    assert [c["items"] for c in cats] == sorted((c["items"] for c in cats), reverse=True)
    biggest = cats[0]
    page = client.get("/v1/catalogue", params={"category": biggest["category"], "limit": 200})
    body = page.json()
    assert body["total"] == biggest["items"]
    assert {i["category"] for i in body["items"]} == {biggest["category"]}
    missing = client.get("/v1/catalogue", params={"category": "no-such-category"})
    assert missing.status_code == 404 and "/v1/categories" in missing.json()["detail"]


def test_shoppers_span_history_sizes_and_items_are_named_in_order(client, trained):
    users = json.loads((trained / "users.json").read_text())
    seen = sp.load_npz(trained / "seen.npz").tocsr()
    history = dict(zip(users, np.diff(seen.indptr).tolist(), strict=True))
    assert client.get("/v1/users", params={"limit": 5}).status_code == 401  # it names shoppers
    shoppers = client.get("/v1/users", params={"limit": 5}, headers={"X-API-Key": KEY}).json()
    assert len(shoppers) == 5
    assert all(history[s["user_id"]] == s["history"] for s in shoppers)
    assert shoppers[0]["history"] == max(history.values())
    assert shoppers[-1]["history"] == min(history.values())

    catalogue = pd.read_parquet(trained / "catalogue.parquet")
    ids = catalogue[n.ITEM_ID].iloc[[3, 0, 7]].tolist()
    named = client.get("/v1/items", params={"ids": ",".join([*ids, "no-such-item"])}).json()
    assert [i["item_id"] for i in named] == ids
    titles = dict(zip(catalogue[n.ITEM_ID], catalogue[n.TITLE], strict=True))
    assert named[0]["title"] == titles[ids[0]]
    assert client.get("/v1/items", params={"ids": ","}).status_code == 422


def test_stream_status_follows_the_live_jobs_progress(client, settings, feast_project):
    s = settings
    fresh = client.get("/v1/stream").json()
    assert fresh == {
        "stream": s.events_stream,
        "group": s.consumer_group,
        "consumers": 0,
        "job_seen_s": None,
        "lag": 0,
        "pending": 0,
        "behind_s": 0.0,
        "last_event_age_s": None,
    }
    events = [{"user_id": "u1", "item_id": f"i{k}", "event_type": "view"} for k in range(3)]
    assert (
        client.post("/v1/events", json={"events": events}, headers={"X-API-Key": KEY}).status_code
        == 202
    )
    waiting = client.get("/v1/stream").json()
    assert (waiting["lag"], waiting["pending"]) == (3, 0)  # no live job has read it yet
    assert waiting["behind_s"] >= 0 and waiting["last_event_age_s"] is not None

    r = feast_project.redis.client()  # what the live job does: read, beat, acknowledge
    r.xgroup_create(s.events_stream, s.consumer_group, id="0")
    got = r.xreadgroup(s.consumer_group, "features-0", {s.events_stream: ">"}, count=2)
    heartbeat(r, s.events_stream, "features-0")
    reading = client.get("/v1/stream").json()
    assert (reading["consumers"], reading["lag"], reading["pending"]) == (1, 1, 2)
    assert reading["job_seen_s"] is not None and reading["job_seen_s"] >= 0

    r.xack(s.events_stream, s.consumer_group, *[i for i, _ in got[0][1]])
    rest = r.xreadgroup(s.consumer_group, "features-0", {s.events_stream: ">"})
    r.xack(s.events_stream, s.consumer_group, *[i for i, _ in rest[0][1]])
    done = client.get("/v1/stream").json()
    assert (done["lag"], done["pending"], done["behind_s"]) == (0, 0, 0.0)
