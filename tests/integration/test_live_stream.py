"""The same dataflow live: Redis Stream -> Feast push + Parquet, equal to a backfill."""

import json
import os
import uuid

import pandas as pd
import pyarrow.dataset as ds
import pytest
from bytewax.testing import run_main

from core import names as n
from core.feast_store import open_store
from core.settings import get_settings
from stream.backfill import run_backfill
from stream.live import live_flow, publish, redis_client
from stream.metrics import stream_metrics

pytestmark = pytest.mark.integration
EVENTS = 2_000
COUNTED = ("events_in", "events_acked", "dead_letters")


def value(counter):
    return next(iter(counter.collect())).samples[0].value


def visible_rows(folder, view):
    """Offline rows as Feast sees them: the latest version per (entity, event time)."""
    key = n.VIEW_ENTITY_KEY[view]
    frame = ds.dataset(folder / view, format="parquet").to_table().to_pandas()
    frame = frame.sort_values([key, n.EVENT_TIMESTAMP, n.CREATED_TIMESTAMP])
    frame = frame.drop_duplicates([key, n.EVENT_TIMESTAMP], keep="last")
    frame = frame.drop(columns=[n.CREATED_TIMESTAMP]).reset_index(drop=True)
    return frame.map(lambda v: v.tolist() if hasattr(v, "tolist") else v)


def apply_project(settings):
    """Empty offline folders and a real `feast apply` for ``settings``' project."""
    import subprocess
    import sys

    for view in n.VIEW_FEATURES:
        (settings.offline_dir / view).mkdir(parents=True)
    env = {**os.environ, **settings.feast_env()}
    subprocess.run(
        [sys.executable, "-m", "feast.cli.cli", "apply"],
        check=True,
        env=env,
        cwd=settings.feature_repo,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def live_settings(feast_project, tmp_path_factory):
    """A second Feast project on the same Redis, with its own streams and data folder."""
    base = feast_project.settings
    tag = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={
            "data_dir": tmp_path_factory.mktemp("live"),
            "feast_project": f"live_{tag}",
            "events_stream": f"test:{tag}:events",
            "dead_letter_stream": f"test:{tag}:dead",
        }
    )
    for view in n.VIEW_FEATURES:
        (settings.offline_dir / view).mkdir(parents=True)
    import subprocess
    import sys

    from feast.repo_operations import apply_total  # noqa: F401  (fails loudly if missing)

    env = {**os.environ, **settings.feast_env()}
    subprocess.run(
        [sys.executable, "-m", "feast.cli.cli", "apply"],
        check=True,
        env=env,
        cwd=settings.feature_repo,
        capture_output=True,
    )
    yield settings
    base.export_feast_env()
    get_settings.cache_clear()


def test_live_run_equals_backfill_and_acks_everything(live_settings, feast_project):
    events = pd.read_parquet(
        feast_project.settings.canonical_dir / "online-retail" / "events.parquet"
    ).iloc[:EVENTS]
    log_path = live_settings.data_dir / "events.parquet"
    events.to_parquet(log_path)
    client = redis_client(live_settings)
    rows = events.assign(
        event_timestamp=events[n.EVENT_TIMESTAMP].map(lambda t: t.isoformat())
    ).to_dict("records")
    publish(client, live_settings.events_stream, rows[:1000])
    client.xadd(live_settings.events_stream, {"event": "{not json"})
    publish(
        client,
        live_settings.events_stream,
        [
            {**rows[0], n.EVENT_TYPE: "teleport"},
            {**rows[0], n.USER_ID: None},
            {**rows[0], n.EVENT_TIMESTAMP: "2999-01-01T00:00:00+00:00"},
        ],
    )
    publish(client, live_settings.events_stream, rows[1000:])

    metrics = stream_metrics()
    before = {m: value(getattr(metrics, m)) for m in COUNTED}
    run_main(live_flow(live_settings, idle_stop_s=1.0))
    counted = {m: value(getattr(metrics, m)) - before[m] for m in COUNTED}
    assert counted == {"events_in": EVENTS + 4, "events_acked": EVENTS, "dead_letters": 4}
    assert "freshness mean" in metrics.summary()

    dead = client.xrange(live_settings.dead_letter_stream)
    reasons = sorted(f[b"reason"].decode().split(":")[0] for _, f in dead)
    assert reasons == [
        "bad JSON",
        "event_timestamp in the future",
        "missing user_id",
        "unknown event_type 'teleport'",
    ]
    assert json.loads(dead[0][1][b"raw"])  # the raw entry is kept for inspection
    pending = client.xpending(live_settings.events_stream, live_settings.consumer_group)
    assert pending["pending"] == 0  # every entry acknowledged after its rows were written

    backfilled = live_settings.data_dir / "backfill"
    run_backfill(log_path, backfilled, live_settings.data_dir / "bf_dead", progress=False)
    for view in n.VIEW_FEATURES:
        pd.testing.assert_frame_equal(
            visible_rows(live_settings.offline_dir, view), visible_rows(backfilled, view)
        )

    store = open_store(live_settings)
    for view in n.VIEW_FEATURES:
        key = n.VIEW_ENTITY_KEY[view]
        latest = visible_rows(backfilled, view).drop_duplicates(key, keep="last")
        sample = latest.sample(min(25, len(latest)), random_state=3)
        online = store.get_online_features(
            features=[f"{view}:{f}" for f in n.VIEW_FEATURES[view]],
            entity_rows=[{key: k} for k in sample[key]],
        ).to_dict()
        for feature in n.VIEW_FEATURES[view]:
            got, want = online[feature], sample[feature].tolist()
            assert got == pytest.approx(want) if feature == n.CONVERSION_7D else got == want, (
                view,
                feature,
            )


def _ig_stream(settings, *args):
    import subprocess
    import sys

    env = {
        **os.environ,
        **{
            f"IG_{k.upper()}": str(v)
            for k, v in {
                "data_dir": settings.data_dir,
                "feast_project": settings.feast_project,
                "redis_port": settings.redis_port,
                "events_stream": settings.events_stream,
                "dead_letter_stream": settings.dead_letter_stream,
                "stream_batch": 100,
            }.items()
        },
    }
    return subprocess.Popen(
        [sys.executable, "-m", "core.cli", "stream", *args],
        env=env,
        cwd=settings.feature_repo.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_sigkill_mid_stream_then_resume_equals_uninterrupted(live_settings, feast_project):
    import signal
    import time

    tag = uuid.uuid4().hex[:8]
    settings = live_settings.model_copy(
        update={
            "data_dir": live_settings.data_dir / f"kill_{tag}",
            "events_stream": f"test:{tag}:events",
            "dead_letter_stream": f"test:{tag}:dead",
        }
    )
    apply_project(settings)
    events = pd.read_parquet(
        feast_project.settings.canonical_dir / "online-retail" / "events.parquet"
    ).iloc[:EVENTS]
    client = redis_client(settings)
    publish(
        client,
        settings.events_stream,
        events.assign(
            event_timestamp=events[n.EVENT_TIMESTAMP].map(lambda t: t.isoformat())
        ).to_dict("records"),
    )
    recovery = settings.data_dir / "recovery"

    job = _ig_stream(settings, "-r", str(recovery), "--epoch-s", "0.2", "--idle-stop", "30")
    deadline = time.monotonic() + 120
    delivered = 0
    while time.monotonic() < deadline and delivered < EVENTS // 3 and job.poll() is None:
        time.sleep(0.05)
        groups = client.xinfo_groups(settings.events_stream)
        delivered = (groups[0].get("entries-read") or 0) if groups else 0
    assert delivered >= EVENTS // 3, job.stderr.read().decode()[-3000:] if job.poll() else ""
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=10)
    assert client.xpending(settings.events_stream, settings.consumer_group)["pending"] < EVENTS

    resumed = _ig_stream(settings, "-r", str(recovery), "--epoch-s", "0.2", "--idle-stop", "2")
    assert resumed.wait(timeout=180) == 0, resumed.stderr.read().decode()[-2000:]

    log_path = settings.data_dir / "events.parquet"
    events.to_parquet(log_path)
    backfilled = settings.data_dir / "backfill"
    run_backfill(log_path, backfilled, settings.data_dir / "bf_dead", progress=False)
    for view in n.VIEW_FEATURES:  # no lost events, no double counts
        pd.testing.assert_frame_equal(
            visible_rows(settings.offline_dir, view), visible_rows(backfilled, view)
        )
    store = open_store(settings)
    view = n.USER_BEHAVIOR
    latest = visible_rows(backfilled, view).drop_duplicates(n.USER_ID, keep="last")
    online = store.get_online_features(
        features=[f"{view}:{n.EVENTS_TOTAL}"],
        entity_rows=[{n.USER_ID: u} for u in latest[n.USER_ID]],
    ).to_dict()
    assert online[n.EVENTS_TOTAL] == latest[n.EVENTS_TOTAL].tolist()
    assert client.xpending(settings.events_stream, settings.consumer_group)["pending"] == 0


def test_two_processes_on_loopback_equal_backfill(live_settings, feast_project):
    from core.redis_server import free_port

    tag = uuid.uuid4().hex[:8]
    settings = live_settings.model_copy(
        update={
            "data_dir": live_settings.data_dir / f"two_{tag}",
            "events_stream": f"test:{tag}:events",
            "dead_letter_stream": f"test:{tag}:dead",
        }
    )
    apply_project(settings)
    events = pd.read_parquet(
        feast_project.settings.canonical_dir / "online-retail" / "events.parquet"
    ).iloc[:EVENTS]
    client = redis_client(settings)
    publish(
        client,
        settings.events_stream,
        events.assign(
            event_timestamp=events[n.EVENT_TIMESTAMP].map(lambda t: t.isoformat())
        ).to_dict("records"),
    )
    addresses = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    jobs = [_ig_stream(settings, "-a", addresses, "-i", str(i), "--idle-stop", "3") for i in (0, 1)]
    for job in jobs:
        assert job.wait(timeout=240) == 0, job.stderr.read().decode()[-2000:]
    assert client.xpending(settings.events_stream, settings.consumer_group)["pending"] == 0

    log_path = settings.data_dir / "events.parquet"
    events.to_parquet(log_path)
    backfilled = settings.data_dir / "backfill"
    run_backfill(log_path, backfilled, settings.data_dir / "bf_dead", progress=False)
    for view in n.VIEW_FEATURES:
        pd.testing.assert_frame_equal(
            visible_rows(settings.offline_dir, view), visible_rows(backfilled, view)
        )


def test_job_survives_a_redis_restart(tmp_path_factory, feast_project):
    import time

    from core.redis_server import RedisServer, free_port

    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis_restart"))
    proc = server.start(daemonize=False)
    tag = uuid.uuid4().hex[:8]
    settings = feast_project.settings.model_copy(
        update={
            "data_dir": tmp_path_factory.mktemp("restart"),
            "redis_port": server.port,
            "feast_project": f"restart_{tag}",
            "events_stream": f"test:{tag}:events",
            "dead_letter_stream": f"test:{tag}:dead",
        }
    )
    apply_project(settings)
    events = pd.read_parquet(
        feast_project.settings.canonical_dir / "online-retail" / "events.parquet"
    ).iloc[:EVENTS]
    rows = events.assign(
        event_timestamp=events[n.EVENT_TIMESTAMP].map(lambda t: t.isoformat())
    ).to_dict("records")
    half = EVENTS // 2
    publish(redis_client(settings), settings.events_stream, rows[:half])
    job = _ig_stream(settings, "--idle-stop", "8")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.1)
            groups = redis_client(settings).xinfo_groups(settings.events_stream)
            if groups and groups[0].get("entries-read") == half and groups[0]["pending"] == 0:
                break
        server.stop()  # SHUTDOWN SAVE: the stream and its group survive the restart
        time.sleep(2)  # the job meets a dead Redis meanwhile
        proc.wait(timeout=10)
        proc = server.start(daemonize=False)
        publish(redis_client(settings), settings.events_stream, rows[half:])
        assert job.wait(timeout=180) == 0, job.stderr.read().decode()[-2000:]
        client = redis_client(settings)
        assert client.xpending(settings.events_stream, settings.consumer_group)["pending"] == 0
        log_path = settings.data_dir / "events.parquet"
        events.to_parquet(log_path)
        backfilled = settings.data_dir / "backfill"
        run_backfill(log_path, backfilled, settings.data_dir / "bf_dead", progress=False)
        for view in n.VIEW_FEATURES:
            pd.testing.assert_frame_equal(
                visible_rows(settings.offline_dir, view), visible_rows(backfilled, view)
            )
    finally:
        job.kill()
        if proc is not None:
            proc.terminate()
        feast_project.settings.export_feast_env()
