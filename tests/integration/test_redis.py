import os
import subprocess
import sys

import pytest

from core.redis_server import RedisServer, free_port
from core.settings import ROOT

pytestmark = pytest.mark.integration


def test_fixture_runs_a_real_redis_server(redis_server):
    client = redis_server.client()
    assert client.info("server")["redis_version"].split(".")[0] >= "6"
    client.set("k", "v")
    assert client.get("k") == b"v"


def test_cli_redis_up_status_down_keeps_data(tmp_path):
    env = {**os.environ, "IG_DATA_DIR": str(tmp_path), "IG_REDIS_PORT": str(free_port())}

    def ig(*args):
        return subprocess.run(
            [sys.executable, "-m", "cli", "redis", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )

    assert "started" in ig("up").stdout
    server = RedisServer(int(env["IG_REDIS_PORT"]), tmp_path / "redis")
    assert server.pid() is not None
    server.client().set("kept", "yes")
    assert "already running" in ig("up").stdout
    assert "stopped" in ig("down").stdout
    assert ig("status").returncode == 1
    assert (tmp_path / "redis" / "dump.rdb").exists()
    assert "started" in ig("up").stdout
    assert server.client().get("kept") == b"yes"
    ig("down")


def test_stop_that_cannot_save_says_so_and_force_stops(tmp_path):
    import shutil

    from core.redis_server import RedisStopError

    server = RedisServer(free_port(), tmp_path / "gone")
    proc = server.start(daemonize=False)
    shutil.rmtree(tmp_path / "gone")  # its data folder vanished: SHUTDOWN SAVE must fail
    with pytest.raises(RedisStopError, match="--force"):
        server.stop()
    assert server.ping()  # refused, so still running: nothing lost silently
    assert server.stop(save=False)
    proc.wait(timeout=10)
    assert not server.ping()
