"""Forget a shopper everywhere, proven: a project of its own (the slice, copied, on a Redis of
its own), the live job and the API run, then ``DELETE /v1/users/{id}``; Redis (every key and
stream), every Parquet file and the artifact folder are scanned for the id; everyone else's
features are unchanged; the id's next event is a new shopper."""

import json
import shutil
import time
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest
from bytewax.testing import run_main
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from core import names as n
from core.feast_store import feast_apply, materialize, open_store
from core.redis_server import RedisServer, free_port, redis_client
from models.artifact import USERS
from stream.forget import leftovers, online_key
from stream.live import live_flow

pytestmark = pytest.mark.integration
ADMIN, READ = "forget-admin-key", "forget-read-key"
OTHERS = 25


@pytest.fixture(scope="module")
def project(feast_project, trained, tmp_path_factory):
    """The session's slice copied into a folder and a Redis of their own (this test deletes)."""
    root = tmp_path_factory.mktemp("forget")
    data = root / "data"
    shutil.copytree(feast_project.settings.data_dir, data, ignore=shutil.ignore_patterns("redis"))
    manifest = data / "offline" / n.BACKFILL_MANIFEST
    info = json.loads(manifest.read_text())
    info["events_path"] = str(data / "canonical" / "online-retail" / "events.parquet")
    manifest.write_text(json.dumps(info))
    artifacts = root / "artifacts"
    shutil.copytree(trained.parent, artifacts, symlinks=True)
    server = RedisServer(free_port(), root / "redis")
    proc = server.start(daemonize=False)
    settings = feast_project.settings.model_copy(
        update={
            "data_dir": data,
            "redis_port": server.port,
            "feast_project": f"forget_{uuid.uuid4().hex[:8]}",
            "artifacts_dir": artifacts,
            "api_key": SecretStr(ADMIN),
            "read_key": SecretStr(READ),
        }
    )
    feast_apply(settings)
    materialize(open_store(settings), settings)
    yield settings
    proc.terminate()
    proc.wait(timeout=10)
    feast_project.settings.export_feast_env()


def pick_shopper(settings, artifacts):
    """A trained shopper with many events whose id is not also an item id (a scan for an id
    that is also an item's would find the item)."""
    users = json.loads((artifacts / "latest" / USERS).read_text())
    events = pq.read_table(settings.canonical_dir / "online-retail" / "events.parquet")
    items = set(events[n.ITEM_ID].to_pylist())
    counts = events.group_by(n.USER_ID).aggregate([(n.USER_ID, "count")]).to_pydict()
    busy = sorted(zip(counts[f"{n.USER_ID}_count"], counts[n.USER_ID], strict=True), reverse=True)
    trained = set(users)
    user = next(u for _, u in busy if u in trained and u not in items)
    others = [u for _, u in busy if u != user][:OTHERS]
    return user, others


def online_rows(settings, users):
    store = open_store(settings)
    service = store.get_feature_service(n.PROFILE_V1)
    rows = store.get_online_features(
        features=service, entity_rows=[{n.USER_ID: u} for u in users]
    ).to_dict()
    return rows


def offline_rows_of_others(settings, user):
    """Every user view's rows of everyone but ``user``, as sorted tuples."""
    out = {}
    for view in (n.USER_BEHAVIOR, n.USER_INTEREST):
        table = pq.read_table(settings.offline_dir / view).to_pylist()
        out[view] = sorted(
            tuple(json.dumps(v, default=str) for v in row.values())
            for row in table
            if row[n.USER_ID] != user
        )
    return out


def test_forget_removes_a_shopper_everywhere_and_nobody_else(project):
    settings = project
    user, others = pick_shopper(settings, settings.artifacts_dir)
    client = redis_client(settings)
    admin, read = {"X-API-Key": ADMIN}, {"X-API-Key": READ}
    with TestClient(create_app(settings)) as api:
        # the shopper and others shop live: answers (impressions), clicks, views, a bad event
        for who in (user, *others[:3]):
            body = api.get(f"/v1/recommend/{who}", params={"k": 5}).json()
            item = body["items"][0]["item_id"]
            click = {"user_id": who, "item_id": item}
            events = [
                {**click, "event_type": "click", "request_id": body["request_id"]},
                {**click, "event_type": "view"},
            ]
            assert api.post("/v1/events", json={"events": events}, headers=admin).status_code == 202
        late = {"user_id": user, "item_id": "x", "event_type": "view", "event_timestamp": 0}
        api.post("/v1/events", json={"events": [late]}, headers=admin)  # dead-lettered: too late
        time.sleep(0.3)  # the impression log's thread writes every 50 ms
        run_main(live_flow(settings, idle_stop_s=1.0))
        assert api.get(f"/v1/users/{user}/profile", headers=read).json()["known"]
        before = leftovers(settings, client, user)
        places = {"redis" if p.startswith("redis:") else p.split("/")[-2] for p in before}
        assert {"redis", n.USER_BEHAVIOR, n.USER_INTEREST, "online-retail"} <= places, before
        assert any(p.endswith(USERS) for p in before), before  # the artifacts, too
        # the same shopper in another Feast project kept in this Redis (Feast's key: the
        # entity key, then the project's name): forgotten there too
        own = online_key(open_store(settings), user)
        elsewhere = own[: -len(settings.feast_project)] + b"another_project"
        assert client.copy(own, elsewhere)
        others_online = online_rows(settings, others)
        others_offline = offline_rows_of_others(settings, user)

        assert api.delete(f"/v1/users/{user}").status_code == 401  # the admin key only
        assert api.delete(f"/v1/users/{user}", headers=read).status_code == 401
        r = api.delete(f"/v1/users/{user}", headers=admin)
        assert r.status_code == 200, r.text
        record = r.json()
        removed = record["removed"]
        assert removed["online_keys"] == 2 and removed["artifacts"] == 1
        assert removed["stream_entries"] >= 5 + 2 and removed["answers"] == 1
        assert removed["offline_rows"] > 0 and removed["log_rows"] > 0
        assert record["live_job"] == "queued"
        assert user not in json.dumps(record)
        run_main(live_flow(settings, idle_stop_s=1.0))  # reads the control event, drops it
        assert leftovers(settings, client, user) == {}
        assert online_rows(settings, others) == others_online
        assert offline_rows_of_others(settings, user) == others_offline

        # served as a stranger at once, before any reload (this answer's impressions are
        # the new shopper's first events)
        assert api.get(f"/v1/recommend/{user}", params={"k": 5}).json()["known"] is False

        # a later event of the same id is a new shopper
        again = {"user_id": user, "item_id": item, "event_type": "view"}
        assert api.post("/v1/events", json=again, headers=admin).status_code == 202
        run_main(live_flow(settings, idle_stop_s=1.0))
        profile = api.get(f"/v1/users/{user}/profile", headers=read).json()
        assert profile["features"]["user_behavior__events_total"] == 5 + 1  # 5 shown, 1 view
        assert profile["recent_items"] == [item]
        assert api.post("/v1/admin/reload", headers=admin).status_code == 200
        assert api.get(f"/v1/recommend/{user}", params={"k": 5}).json()["known"] is True
    records = (settings.data_dir / "forget" / "records.jsonl").read_text().splitlines()
    assert json.loads(records[-1])["forget_id"] == record["forget_id"]  # (fuzzing forgets too)
    assert np.isfinite(record["seconds"])
