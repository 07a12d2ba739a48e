"""Session fixtures: a private redis-server on a free port, flushed between tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from marginwatch.cli.embedded_redis import RedisServer, start_redis_server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the whole session (never a server someone else started)."""
    server = start_redis_server()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on an empty database."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()
