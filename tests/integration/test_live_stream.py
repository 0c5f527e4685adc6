"""The same dataflow live: Redis Stream -> Feast push + Parquet, equal to a backfill."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pandas as pd
import pytest
from bytewax.testing import run_main

from core import names as n
from core.bus import group_progress, partition_streams, publish
from core.feast_store import feast_apply, materialize, open_store
from core.redis_server import RedisServer, free_port, redis_client
from stream.backfill import run_backfill
from stream.compare import offline_differences, online_differences, visible_rows
from stream.job import LAYOUT_FILE
from stream.live import live_flow, open_marks
from stream.metrics import stream_metrics

pytestmark = pytest.mark.integration
EVENTS = 2_000
COUNTED = ("events_in", "events_acked", "dead_letters")


def value(counter):
    return next(iter(counter.collect())).samples[0].value


def fresh_project(base, data_dir, **update):
    """A new Feast project (own data folder and streams) applied with the real `feast` CLI."""
    tag = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={
            "data_dir": data_dir,
            "feast_project": f"live_{tag}",
            "events_stream": f"test:{tag}:events",
            "dead_letter_stream": f"test:{tag}:dead",
            **update,
        }
    )
    for view in n.VIEW_FEATURES:
        (settings.offline_dir / view).mkdir(parents=True)
    feast_apply(settings)
    return settings


def slice_of_events(feast_project):
    return pd.read_parquet(
        feast_project.settings.canonical_dir / "online-retail" / "events.parquet"
    ).iloc[:EVENTS]


def as_messages(events):
    return events.assign(
        event_timestamp=events[n.EVENT_TIMESTAMP].map(lambda t: t.isoformat())
    ).to_dict("records")


def assert_equals_backfill(settings, events):
    """Live offline rows equal a backfill of the same events; returns the backfill folder."""
    log_path = settings.data_dir / "events.parquet"
    events.to_parquet(log_path)
    backfilled = settings.data_dir / "backfill"
    run_backfill(log_path, backfilled, settings.data_dir / "bf_dead", progress=False)
    assert offline_differences(settings.offline_dir, backfilled) == []
    assert (
        redis_client(settings).xpending(settings.events_stream, settings.consumer_group)["pending"]
        == 0
    )
    return backfilled


def ig_stream(settings, *args):
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
                "event_partitions": settings.event_partitions,
            }.items()
        },
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "stream", *args],
        env=env,
        cwd=settings.feature_repo.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def delivered(settings):
    """(entries delivered to the group, entries pending): counted the Redis 6.2 way too."""
    got = group_progress(
        redis_client(settings), settings.events_stream, settings.consumer_group, True
    )
    return got.delivered, got.pending


def wait_until(job, condition, timeout_s=120):
    """Poll ``condition`` while ``job`` runs; fail with the job's stderr if it never holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and job.poll() is None and not condition():
        time.sleep(0.02)
    assert condition(), job.stderr.read().decode()[-3000:]


def assert_online_equals(settings, backfilled):
    """Every entity's online values (Feast) equal its latest row of the backfill."""
    assert online_differences(settings, backfilled) == []


@pytest.fixture
def project(feast_project, tmp_path):
    yield fresh_project(feast_project.settings, tmp_path / "live")
    feast_project.settings.export_feast_env()


def test_live_run_equals_backfill_and_acks_everything(project, feast_project):
    events = slice_of_events(feast_project)
    rows = as_messages(events)
    client = redis_client(project)
    publish(client, project.events_stream, rows[:1000])
    client.xadd(project.events_stream, {"event": "{not json"})
    publish(
        client,
        project.events_stream,
        [
            {**rows[0], n.EVENT_TYPE: "teleport"},
            {**rows[0], n.USER_ID: None},
            {**rows[0], n.EVENT_TIMESTAMP: "2999-01-01T00:00:00+00:00"},
        ],
    )
    publish(client, project.events_stream, rows[1000:])

    metrics = stream_metrics()
    before = {m: value(getattr(metrics, m)) for m in COUNTED}
    run_main(live_flow(project, idle_stop_s=1.0))
    counted = {m: value(getattr(metrics, m)) - before[m] for m in COUNTED}
    assert counted == {"events_in": EVENTS + 4, "events_acked": EVENTS, "dead_letters": 4}
    assert "freshness mean" in metrics.summary()

    dead = client.xrange(project.dead_letter_stream)
    reasons = sorted(f[b"reason"].decode().split(":")[0] for _, f in dead)
    assert reasons == [
        "bad JSON",
        "event_timestamp in the future",
        "missing user_id",
        "unknown event_type 'teleport'",
    ]
    assert json.loads(dead[0][1][b"raw"])  # the raw entry is kept for inspection

    backfilled = assert_equals_backfill(project, events)
    assert_online_equals(project, backfilled)


def test_sigkill_mid_stream_then_resume_equals_uninterrupted(project, feast_project):
    events = slice_of_events(feast_project)
    publish(redis_client(project), project.events_stream, as_messages(events))
    recovery = str(project.data_dir / "recovery")

    job = ig_stream(project, "-r", recovery, "--epoch-s", "0.2", "--idle-stop", "30")
    wait_until(job, lambda: delivered(project)[0] >= EVENTS // 3)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=10)

    resumed = ig_stream(project, "-r", recovery, "--epoch-s", "0.2", "--idle-stop", "2")
    assert resumed.wait(timeout=180) == 0, resumed.stderr.read().decode()[-2000:]
    backfilled = assert_equals_backfill(project, events)  # no lost events, no double counts
    latest = visible_rows(backfilled, n.USER_BEHAVIOR).drop_duplicates(n.USER_ID, keep="last")
    online = (
        open_store(project)
        .get_online_features(
            features=[f"{n.USER_BEHAVIOR}:{n.EVENTS_TOTAL}"],
            entity_rows=[{n.USER_ID: u} for u in latest[n.USER_ID]],
        )
        .to_dict()
    )
    assert online[n.EVENTS_TOTAL] == latest[n.EVENTS_TOTAL].tolist()


def test_two_processes_on_loopback_equal_backfill(project, feast_project):
    events = slice_of_events(feast_project)
    publish(redis_client(project), project.events_stream, as_messages(events))
    addresses = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    jobs = [ig_stream(project, "-a", addresses, "-i", str(i), "--idle-stop", "3") for i in (0, 1)]
    for job in jobs:
        assert job.wait(timeout=240) == 0, job.stderr.read().decode()[-2000:]
    assert_equals_backfill(project, events)


def test_two_partitions_read_by_two_processes_equal_a_backfill(project, feast_project):
    """A bus of 2 partitions, `ig stream -w 2`: two processes (one cluster on local ports),
    each reading one partition, its users' state buckets on it: every event is written and
    acknowledged; each shopper's events are on one partition, in order, so user rows offline
    equal a backfill's; items see both partitions interleaved (their intermediate offline
    rows may differ), and every entity's online value, its latest state, equals the
    backfill's: one sink partition writes each entity. Events are re-timed to now, in order:
    read at full speed, the partitions' event times stay within the allowed lateness."""
    settings = project.model_copy(update={"event_partitions": 2})
    events = slice_of_events(feast_project).reset_index(drop=True)
    start = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=5)
    events[n.EVENT_TIMESTAMP] = start + pd.to_timedelta(events.index * 1000, "us")
    publish(redis_client(settings), settings.events_stream, as_messages(events), 2)
    client = redis_client(settings)
    sizes = [client.xlen(s) for s in partition_streams(settings.events_stream, 2)]
    assert sum(sizes) == EVENTS and min(sizes) > EVENTS // 4
    recovery = settings.data_dir / "recovery"
    job = ig_stream(settings, "-w", "2", "-r", str(recovery), "--idle-stop", "3")
    assert job.wait(timeout=240) == 0, job.stderr.read().decode()[-2000:]
    layout = json.loads((recovery / LAYOUT_FILE).read_text())
    assert layout["user_buckets"] == "2 workers reading 2 partitions"
    assert len(list(recovery.glob("part-*.sqlite3"))) == 2
    for stream in partition_streams(settings.events_stream, 2):
        assert client.xpending(stream, settings.consumer_group)["pending"] == 0
    log_path = settings.data_dir / "events.parquet"
    events.to_parquet(log_path)
    backfilled = settings.data_dir / "backfill"
    run_backfill(log_path, backfilled, settings.data_dir / "bf_dead", progress=False)
    for view in (n.USER_BEHAVIOR, n.USER_INTEREST):
        pd.testing.assert_frame_equal(
            visible_rows(settings.offline_dir, view), visible_rows(backfilled, view)
        )
    assert_online_equals(settings, backfilled)
    assert not client.exists(settings.dead_letter_stream)
    assert not open_marks(client, settings.events_stream)  # no half-written batch


def test_job_survives_a_redis_restart(tmp_path, feast_project):
    server = RedisServer(free_port(), tmp_path / "redis")
    proc = server.start(daemonize=False)
    settings = fresh_project(feast_project.settings, tmp_path / "live", redis_port=server.port)
    events = slice_of_events(feast_project)
    rows, half = as_messages(events), EVENTS // 2
    publish(redis_client(settings), settings.events_stream, rows[:half])
    job = ig_stream(settings, "--idle-stop", "8")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.1)
            if delivered(settings) == (half, 0):
                break
        server.stop()  # SHUTDOWN SAVE: the stream and its group survive the restart
        time.sleep(2)  # the job meets a dead Redis meanwhile
        proc.wait(timeout=10)
        proc = server.start(daemonize=False)
        publish(redis_client(settings), settings.events_stream, rows[half:])
        assert job.wait(timeout=180) == 0, job.stderr.read().decode()[-2000:]
        assert_equals_backfill(settings, events)
    finally:
        job.kill()
        if proc is not None:
            proc.terminate()
        feast_project.settings.export_feast_env()


def test_live_continues_from_a_backfill_of_the_first_half(project, feast_project):
    """The order a user deploys in: backfill + materialize, then the live job on new events.
    Online values and visible offline rows equal a backfill of the whole log."""
    events = slice_of_events(feast_project)
    half = EVENTS // 2
    first_half = project.data_dir / "first_half.parquet"
    events.iloc[:half].to_parquet(first_half)
    run_backfill(first_half, project.offline_dir, project.data_dir / "dead", progress=False)
    materialize(open_store(project), project)
    publish(redis_client(project), project.events_stream, as_messages(events.iloc[half:]))
    metrics = stream_metrics()
    before = {m: value(getattr(metrics, m)) for m in ("history_replayed", "events_acked")}
    run_main(live_flow(project, idle_stop_s=1.0))
    assert value(metrics.history_replayed) - before["history_replayed"] == half
    assert value(metrics.events_acked) - before["events_acked"] == EVENTS - half
    backfilled = assert_equals_backfill(project, events)
    assert_online_equals(project, backfilled)


def test_restart_without_recovery_rebuilds_state_from_the_stream(project, feast_project):
    """A job started again without a recovery folder continues, it does not reset."""
    events = slice_of_events(feast_project)
    rows, half = as_messages(events), EVENTS // 2
    client = redis_client(project)
    publish(client, project.events_stream, rows[:half])
    run_main(live_flow(project, idle_stop_s=1.0))
    publish(client, project.events_stream, rows[half:])
    run_main(live_flow(project, idle_stop_s=1.0))  # fresh state: rebuilt, then continued
    backfilled = assert_equals_backfill(project, events)
    assert_online_equals(project, backfilled)


def test_sigkill_before_the_first_snapshot_leaves_nothing_pending(project, feast_project):
    """Delivered-but-unacknowledged entries of a job killed before any snapshot are claimed
    again (XAUTOCLAIM) and processed by the next start."""
    events = slice_of_events(feast_project)
    client = redis_client(project)
    messages = as_messages(events)
    publish(client, project.events_stream, messages[:-200])
    recovery = str(project.data_dir / "recovery")
    job = ig_stream(project, "-r", recovery, "--epoch-s", "600", "--idle-stop", "30")
    wait_until(job, lambda: delivered(project)[0] >= EVENTS // 3)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=10)
    # Whatever the killed job left pending (a poll cannot reliably catch it between its read
    # and its ack, and it may have read everything), another worker that died holding the
    # last 200 entries leaves some for certain.
    publish(client, project.events_stream, messages[-200:])
    client.xreadgroup(project.consumer_group, "lost-worker", {project.events_stream: ">"}, 200)
    assert delivered(project)[1] >= 200
    resumed = ig_stream(project, "-r", recovery, "--epoch-s", "600", "--idle-stop", "2")
    assert resumed.wait(timeout=180) == 0, resumed.stderr.read().decode()[-2000:]
    backfilled = assert_equals_backfill(project, events)  # asserts nothing is pending
    assert_online_equals(project, backfilled)


def test_live_job_refuses_feature_rows_it_cannot_account_for(project):
    from stream.live import HistoryError

    (project.offline_dir / n.USER_BEHAVIOR / "part-x.parquet").write_bytes(b"rows")
    with pytest.raises(HistoryError, match="no _backfill.json"):
        live_flow(project)
    env = {**os.environ, "IG_DATA_DIR": str(project.data_dir)}
    for workers in ("1", "2"):  # -w 2: each worker process refuses, and so does the command
        out = subprocess.run(
            [sys.executable, "-m", "cli", "stream", "-w", workers, "--idle-stop", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert out.returncode == 2 and "Run `make backfill`" in out.stderr


def test_an_event_23h_ahead_stalls_no_other_shopper(feast_project, tmp_path):
    """Accepted (tolerance and lateness 24 h): other shoppers' on-time events all count.
    With the default 300 s tolerance the same event is itself a dead letter, nobody else."""
    events = slice_of_events(feast_project).iloc[:300]
    now = pd.Timestamp.now(tz="UTC")
    normal = [{**e, n.EVENT_TIMESTAMP: now.isoformat()} for e in as_messages(events)]
    skewed = {
        **normal[0],
        n.USER_ID: "skewed",
        n.EVENT_TIMESTAMP: str(now + pd.Timedelta(hours=23)),
    }
    for name, update, dead_users in (
        ("day", {"allowed_lateness_s": 86_400, "future_tolerance_s": 86_400}, []),
        ("default", {}, ["skewed"]),
    ):
        settings = fresh_project(feast_project.settings, tmp_path / name, **update)
        client = redis_client(settings)
        publish(client, settings.events_stream, [skewed, *normal])
        run_main(live_flow(settings, idle_stop_s=1.0))
        dead = [
            json.loads(f[b"raw"])[n.USER_ID] for _, f in client.xrange(settings.dead_letter_stream)
        ]
        assert dead == dead_users, name
        assert delivered(settings) == (len(normal) + 1, 0)
    feast_project.settings.export_feast_env()


def test_impressions_and_clicks_feed_item_feedback_live_as_in_a_backfill(project, feast_project):
    """The API's impressions (with their slot) and clicks go through the same dataflow: the
    item_feedback rows live equal a backfill's, online too, and weigh each impression by
    how likely its slot is looked at."""
    events = slice_of_events(feast_project).iloc[:300].reset_index(drop=True)
    shown = events.iloc[::10].assign(**{n.EVENT_TYPE: "impression", n.VALUE: 1.0})
    shown[n.POSITION] = [i % 5 for i in range(len(shown))]
    shown[n.CONTEXT] = [[1.0, 0.5, float(i % 2), 0.0, 1.0, 0.0] for i in range(len(shown))]
    clicked = shown.iloc[::3].assign(**{n.EVENT_TYPE: "click"}).drop(columns=n.POSITION)
    log = pd.concat([events, shown, clicked]).sort_values(n.EVENT_TIMESTAMP, kind="stable")
    log = log.reset_index(drop=True)
    optional = (n.POSITION, n.CONTEXT)
    messages = [
        {
            k: v
            for k, v in m.items()
            if not (k in optional and not isinstance(v, list | int) and pd.isna(v))
        }
        for m in as_messages(log)
    ]
    for m in messages:
        if n.POSITION in m:
            m[n.POSITION] = int(m[n.POSITION])
    publish(redis_client(project), project.events_stream, messages)
    run_main(live_flow(project, idle_stop_s=1.0))
    backfilled = assert_equals_backfill(project, log)
    assert_online_equals(project, backfilled)
    feedback = visible_rows(backfilled, n.ITEM_FEEDBACK).drop_duplicates(n.ITEM_ID, keep="last")
    assert len(feedback) == shown[n.ITEM_ID].nunique()
    assert feedback[n.EXAMINED].sum() < len(shown)  # slots below the first count for less
    assert feedback[n.CLICKED].sum() == pytest.approx(len(clicked), rel=0.05)  # decay: hours
    learned = [s for s in feedback[n.LINEAR_STATS] if s]  # every item shown with a context
    assert len(learned) == len(feedback)
