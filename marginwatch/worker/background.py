"""The worker's background threads (stress scenarios, ADL sketches): one each, at the lowest
CPU priority, so that on a busy machine the evaluations, whose latency is the product, run
first and the background work takes what is left.

Linux schedules threads as tasks: ``setpriority(PRIO_PROCESS, thread id, 19)`` lowers the
calling thread alone. Elsewhere, or where it is refused, the thread keeps the process's
priority.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

BACKGROUND_NICENESS = 19  # the lowest priority: weight 15 against an evaluation's 1024 (CFS)

log = logging.getLogger("marginwatch.worker")


def background_thread(name: str) -> ThreadPoolExecutor:
    """One thread named ``name``, at ``BACKGROUND_NICENESS``."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=lower_priority)


def lower_priority() -> None:
    """Lower the calling thread's priority to ``BACKGROUND_NICENESS`` (Linux)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
    except (AttributeError, OSError) as error:
        log.info("background thread keeps the process's priority: %s", error)
