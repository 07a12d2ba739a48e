"""Crash points: a daemon exits abruptly (as under ``kill -9``) at a named point of its work,
when ``MARGINWATCH_CRASH_AT`` names it. Off by default; for fault tests, which can then hit
the narrow windows that random kills almost never do.

A daemon arms the point from its settings at start (``arm``); the code marks each point with
``at(name)``. Importing this module arms nothing.
"""

from __future__ import annotations

import os
import sys

# Every point, where it is.
POINTS = {
    "dispatcher:after-pending-flags": "the pending flags are set, the evaluations not enqueued",
    "worker:after-send": "the evaluation's actions are sent, its decisions not remembered",
    "executor:after-margin-calls": "the episode scripts ran, the task not acknowledged",
    "executor:after-liquidation": "the liquidation is written, the task not acknowledged",
    "webhooks:after-post": "a webhook is delivered (2xx), its outbox entry not acknowledged",
}
EXIT_STATUS = 137  # what a shell reports for SIGKILL

_armed: set[str] = set()


def arm(name: str | None) -> None:
    """Crash at ``name`` from now on (``None``: nowhere)."""
    _armed.clear()
    if name is not None:
        _armed.add(name)


def at(name: str) -> None:
    """Exit at once, without cleanup, if ``name`` is armed."""
    if name in _armed:
        sys.stderr.write(f"marginwatch: crash point {name} reached, exiting\n")
        sys.stderr.flush()
        os._exit(EXIT_STATUS)
