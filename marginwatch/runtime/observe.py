"""What every daemon's instrumentation shares: counting Redis errors, ages of events."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from prometheus_client import Counter

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)


@contextmanager
def counting_redis_errors(counter: Counter) -> Iterator[None]:
    """Count a Redis connection or timeout error raised inside, and let it propagate."""
    try:
        yield
    except REDIS_ERRORS:
        counter.inc()
        raise


def age_seconds(now: float, event_time_ms: int) -> float:
    """Seconds from an event time (ms) to ``now`` (Unix seconds); at least 0 (clock skew)."""
    return max(0.0, now - event_time_ms / 1000.0)
