"""Liveness and readiness of a daemon, served beside its metrics (``serve_metrics``).

``/healthz`` answers 200 while every loop of the process goes round: each helper thread and the
Celery consumer beat their ``Heartbeat`` as they loop, and one silent for longer than its bound
makes it 503, naming the loop. A loop waiting on something outside the process (a consumer
reconnecting to its broker) is paused: alive, though not beating. ``/readyz`` answers 200 when
the process is alive and every readiness check passes (Redis and the broker answer, the
consumer consumes, the books are loaded), else 503 with the first reason, one line. Checks are
plain functions given by the daemons; this module does no I/O of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

# A readiness check: ``None`` when ready, otherwise why not (one line, naming what failed).
Check = Callable[[], str | None]

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"


@dataclass
class Heartbeat:
    """When a loop last went round; ``stale_after`` seconds of silence and it is not alive."""

    name: str
    stale_after: float
    paused: bool = False
    clock: Callable[[], float] = time.monotonic
    last: float = field(init=False)

    def __post_init__(self) -> None:
        self.last = self.clock()

    def beat(self) -> None:
        self.last = self.clock()

    def pause(self) -> None:
        """The loop waits on something outside the process: alive, not beating."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.beat()

    def silence(self) -> float | None:
        """Seconds since the last beat, when longer than allowed."""
        silent = self.clock() - self.last
        return silent if not self.paused and silent > self.stale_after else None


@dataclass
class Health:
    """A daemon's heartbeats and readiness checks."""

    heartbeats: list[Heartbeat] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def heartbeat(self, name: str, stale_after: float, *, paused: bool = False) -> Heartbeat:
        """A new heartbeat of loop ``name``, beating from now (unless ``paused``)."""
        beat = Heartbeat(name, stale_after, paused, self.clock)
        with self._lock:
            self.heartbeats.append(beat)
        return beat

    def check(self, check: Check) -> None:
        """Add a readiness check, run after those added before."""
        with self._lock:
            self.checks.append(check)

    def liveness(self) -> str | None:
        """``None`` while every loop beats, else the first silent one."""
        for beat in self._heartbeats():
            silent = beat.silence()
            if silent is not None:
                return f"{beat.name}: no heartbeat for {silent:.0f} s"
        return None

    def readiness(self) -> str | None:
        """``None`` when alive and every check passes, else the first reason."""
        reasons = (check() for check in self._checks())
        return self.liveness() or next((reason for reason in reasons if reason), None)

    def wsgi(self, other: WSGIApplication) -> WSGIApplication:
        """``/healthz`` and ``/readyz`` answered here, every other path by ``other``."""
        probes = {LIVENESS_PATH: self.liveness, READINESS_PATH: self.readiness}

        def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            probe = probes.get(environ.get("PATH_INFO", ""))
            if probe is None:
                return other(environ, start_response)
            return _answer(probe(), start_response)

        return application

    def _heartbeats(self) -> list[Heartbeat]:
        with self._lock:
            return list(self.heartbeats)

    def _checks(self) -> list[Check]:
        with self._lock:
            return list(self.checks)


def _answer(reason: str | None, start_response: StartResponse) -> list[bytes]:
    """200 ``ok``, or 503 and the reason, as one line of plain text."""
    status = "200 OK" if reason is None else "503 Service Unavailable"
    body = f"{reason or 'ok'}\n".encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])  # fmt: skip
    return [body]
