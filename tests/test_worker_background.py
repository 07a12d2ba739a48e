"""The worker's background threads run at the lowest CPU priority, the process at its own."""

from __future__ import annotations

import os
import threading

from marginwatch.worker.background import BACKGROUND_NICENESS, background_thread


def niceness() -> int:
    """The calling thread's niceness (Linux: a thread's own)."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_a_background_thread_runs_at_niceness_19_and_the_caller_keeps_its_own() -> None:
    """The thread's niceness is 19; the calling thread's is what it was."""
    before = niceness()
    thread = background_thread("test")
    try:
        assert thread.submit(niceness).result(timeout=60) == BACKGROUND_NICENESS == 19
    finally:
        thread.shutdown()
    assert niceness() == before
