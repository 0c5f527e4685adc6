"""The API over a real Feast project and Redis."""

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core import names as n

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(feast_project):
    with TestClient(create_app(feast_project.settings)) as c:
        yield c


def test_health_ready_and_metrics(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"ready": True, "redis": True, "feature_store": True}
    client.get("/v1/users/17850/profile")
    text = client.get("/metrics").text
    assert 'ig_requests_total{route="/v1/users/{user_id}/profile",status="200"}' in text


def test_profile_reads_the_users_online_features(client, feast_project):
    body = client.get("/v1/users/17850/profile").json()
    assert body["known"] is True
    assert body["recent_items"] and body["top_categories"]
    total = body["features"][f"{n.USER_BEHAVIOR}__{n.EVENTS_TOTAL}"]
    assert isinstance(total, int) and total > 0


def test_profile_of_unknown_user_is_empty_not_an_error(client):
    body = client.get("/v1/users/nobody-here/profile").json()
    assert body == {
        "user_id": "nobody-here",
        "known": False,
        "features": body["features"],
        "top_categories": [],
        "recent_items": [],
    }
    assert set(body["features"].values()) == {None}


def test_lost_redis_gives_503_with_a_reason_not_a_crash(feast_project):
    from core.redis_server import free_port

    dead = feast_project.settings.model_copy(update={"redis_port": free_port()})
    try:
        with TestClient(create_app(dead)) as c:
            assert c.get("/ready").status_code == 503
            r = c.get("/v1/users/17850/profile")
            assert r.status_code == 503
            assert "unavailable" in r.json()["detail"]
            assert c.get("/health").status_code == 200
    finally:
        feast_project.settings.export_feast_env()
