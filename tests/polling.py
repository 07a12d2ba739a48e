"""Waiting in tests: poll a condition with a deadline, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_for(
    condition: Callable[[], Any],
    what: str | Callable[[], str],
    timeout: float = 60.0,
    interval: float = 0.1,
) -> Any:
    """Poll ``condition`` until it returns something truthy (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            described = what if isinstance(what, str) else what()
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {described}")
        time.sleep(interval)
