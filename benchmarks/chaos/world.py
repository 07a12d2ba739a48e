"""What the chaos run talks to besides the daemons: its Redis (restartable from its AOF), the
price feed holding each level, and a webhook receiver that counts deliveries."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer, start_redis_server
from marginwatch.producer.publisher import Publisher


class Redis:
    """A private redis-server with its AOF (``appendfsync always``) in ``directory``."""

    ARGS = ("--appendonly", "yes", "--appendfsync", "always")

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.server = self._start(None)

    def _start(self, port: int | None) -> RedisServer:
        return start_redis_server(port=port, extra_args=["--dir", str(self.directory), *self.ARGS])

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> redis.Redis:
        """A client that rides out a restart (retries with backoff for about 10 s)."""
        return redis.Redis.from_url(
            self.url,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 20),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )

    def kill_and_restart(self) -> None:
        """kill -9 the server, then start it again on its port from its AOF."""
        self.server.process.kill()
        self.server.process.wait()
        self.server = self._start(self.server.port)

    def stop(self) -> None:
        self.server.stop()


class Feed:
    """Publishes the held level's marks every ``interval`` seconds, as a producer would."""

    def __init__(self, client: redis.Redis, level: Mapping[str, Decimal]) -> None:
        self.publisher, self.level = Publisher(client), dict(level)
        self.interval = 1.0
        self.published = 0
        self._stop = threading.Event()
        self._changed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def hold(self, level: Mapping[str, Decimal]) -> None:
        """Publish ``level`` now, and from now on."""
        self.level = dict(level)
        self._publish()
        self._changed.set()

    def _publish(self) -> None:
        now = time.time_ns() // 1_000_000
        self.publisher.publish([Tick(s, price, now) for s, price in self.level.items()])
        self.published += len(self.level)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(self.interval)
            self._changed.clear()
            try:
                self._publish()
            except redis.RedisError:
                time.sleep(0.1)  # Redis restarting: the next tick goes out when it is back

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        self._thread.join(timeout=5)


class Receiver(BaseHTTPRequestHandler):
    """Counts the deliveries of each event id."""

    deliveries: ClassVar[Counter[str]] = Counter()
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        body: Any = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with Receiver.lock:
            Receiver.deliveries[str(body["event_id"])] += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


def start_receiver() -> tuple[HTTPServer, str]:
    """A webhook receiver on a free port, and its URL."""
    Receiver.deliveries.clear()
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/hook"
