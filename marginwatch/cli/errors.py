"""What ``marginwatch`` reports instead of a traceback: one line on stderr and an exit status for
each error a user can cause (a bad setting or input, a missing file, Redis unreachable). Any
other error is a bug, and keeps its traceback."""

from __future__ import annotations

from dataclasses import dataclass

from marginwatch.base.exits import EXIT_INVALID_INPUT, EXIT_UNAVAILABLE
from marginwatch.base.redaction import redact_url
from marginwatch.base.settings import ConfigurationError, env_name
from marginwatch.base.snapshot import SnapshotError


class InputError(Exception):
    """Invalid user input: reported as one line on stderr with exit status 2."""


@dataclass(frozen=True)
class Report:
    """The line printed (after ``marginwatch: ``) and the exit status."""

    line: str
    status: int


def report(error: Exception, redis_url: str | None) -> Report | None:
    """How ``error`` is reported; None for a bug. ``redis_url``: the configured one, if any."""
    if isinstance(error, InputError | ConfigurationError | SnapshotError):
        return Report(str(error), EXIT_INVALID_INPUT)
    if isinstance(error, OSError) and error.filename is not None:
        return Report(f"{error.filename}: {error.strerror}", EXIT_INVALID_INPUT)
    return _redis_unavailable(error, redis_url)


def _redis_unavailable(error: Exception, redis_url: str | None) -> Report | None:
    import redis  # noqa: PLC0415 (only on this path: ``evaluate`` never loads Redis)

    if not isinstance(error, redis.ConnectionError | redis.TimeoutError):
        return None
    where = f" at {redact_url(redis_url)} ({env_name('redis_url')})" if redis_url else ""
    return Report(f"cannot reach Redis{where}: {error}", EXIT_UNAVAILABLE)
