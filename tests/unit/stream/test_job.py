"""stream.job: when a recovery folder is refused as older than the backfill."""

import json
import os

import pytest

from core.names import BACKFILL_MANIFEST
from core.settings import Settings
from stream.job import LAYOUT_FILE, STATE_FORMAT, prepare_recovery
from stream.live import HistoryError


def _project(tmp_path, finished_at: str, snapshot_mtime: float) -> Settings:
    settings = Settings(data_dir=tmp_path / "data")
    settings.offline_dir.mkdir(parents=True)
    manifest = settings.offline_dir / BACKFILL_MANIFEST
    manifest.write_text(json.dumps({"events_path": "x", "events": 3, "finished_at": finished_at}))
    snapshot = tmp_path / "recovery" / "part-0.sqlite3"
    snapshot.parent.mkdir()
    snapshot.write_bytes(b"")
    layout = {"state": STATE_FORMAT, "state_buckets": settings.state_buckets}
    (snapshot.parent / LAYOUT_FILE).write_text(json.dumps(layout))
    os.utime(snapshot, (snapshot_mtime, snapshot_mtime))
    return settings


def test_a_recovery_snapshot_after_the_backfill_is_kept_when_the_manifest_is_edited(tmp_path):
    # backfill at t=1000, snapshot at t=2000, the manifest's count edited now (a forget)
    settings = _project(tmp_path, "1970-01-01T00:16:40+00:00", 2000.0)
    prepare_recovery(settings, tmp_path / "recovery", 1)  # no error


def test_a_recovery_snapshot_older_than_the_backfill_is_refused(tmp_path):
    settings = _project(tmp_path, "1970-01-01T00:50:00+00:00", 2000.0)
    with pytest.raises(HistoryError, match="predates the last backfill"):
        prepare_recovery(settings, tmp_path / "recovery", 1)


def test_a_recovery_folder_of_another_bucket_count_or_older_job_is_refused(tmp_path):
    settings = _project(tmp_path, "1970-01-01T00:16:40+00:00", 2000.0)
    other = settings.model_copy(update={"state_buckets": settings.state_buckets * 2})
    with pytest.raises(HistoryError, match="another layout"):
        prepare_recovery(other, tmp_path / "recovery", 1)
    (tmp_path / "recovery" / LAYOUT_FILE).unlink()  # snapshots of the job before buckets
    with pytest.raises(HistoryError, match="older version"):
        prepare_recovery(settings, tmp_path / "recovery", 1)


def test_a_new_recovery_folder_records_its_layout(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    prepare_recovery(settings, tmp_path / "recovery", 2)
    layout = json.loads((tmp_path / "recovery" / LAYOUT_FILE).read_text())
    assert layout == {
        "state": STATE_FORMAT,
        "state_buckets": settings.state_buckets,
        "user_buckets": "by hash",  # one partition, two workers: no worker reads by user
    }
    assert len(list((tmp_path / "recovery").glob("part-*.sqlite3"))) == 2


def test_a_recovery_folder_of_placed_buckets_needs_the_same_workers(tmp_path):
    # 2 partitions read by 2 workers: user buckets are named for their readers, so the
    # snapshots' names only fit a job of 2 workers; a job before placement wrote no entry
    settings = Settings(data_dir=tmp_path / "data", event_partitions=2)
    prepare_recovery(settings, tmp_path / "recovery", 2)
    (tmp_path / "recovery" / "part-0.sqlite3").touch()
    layout = json.loads((tmp_path / "recovery" / LAYOUT_FILE).read_text())
    assert layout["user_buckets"] == "2 workers reading 2 partitions"
    prepare_recovery(settings, tmp_path / "recovery", 2)  # the same job: no error
    with pytest.raises(HistoryError, match="the worker count"):
        prepare_recovery(settings, tmp_path / "recovery", 1)
    del layout["user_buckets"]
    (tmp_path / "recovery" / LAYOUT_FILE).write_text(json.dumps(layout))
    prepare_recovery(settings, tmp_path / "recovery", 1)  # by hash, as that job named them
    with pytest.raises(HistoryError, match="another layout"):
        prepare_recovery(settings, tmp_path / "recovery", 2)
