"""What the daemons' ``/readyz`` asks Redis, with a client that fails fast (a probe or a scrape
never hangs on Redis), and the bounds of their heartbeats (``marginwatch.base.health``)."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from marginwatch.base.health import Check
from marginwatch.state.connection import open_redis

FAIL_FAST_TIMEOUT_SECONDS = 1.0
# A helper thread beats each time round its loop (a fraction of a second, a webhook attempt at
# most 5 s); after a Redis error it waits up to 30 s before it starts again.
LOOP_STALE_AFTER_SECONDS = 60.0


def fail_fast_redis(url: str) -> redis.Redis:
    """A client of the state Redis at ``url`` with 1 s timeouts and no retry."""
    return open_redis(
        url,
        socket_timeout=FAIL_FAST_TIMEOUT_SECONDS,
        socket_connect_timeout=FAIL_FAST_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )


def redis_reachable(client: redis.Redis) -> Check:
    """Ready when Redis answers ``PING``."""

    def check() -> str | None:
        try:
            client.ping()
        except redis.RedisError as error:
            return f"redis: {error}"
        return None

    return check
