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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from marginwatch.worker.instrumentation import Throttle

BACKGROUND_NICENESS = 19  # the lowest priority: weight 15 against an evaluation's 1024 (CFS)

log = logging.getLogger("marginwatch.worker")
T = TypeVar("T")


def background_thread(name: str) -> ThreadPoolExecutor:
    """One thread named ``name``, at ``BACKGROUND_NICENESS``."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=lower_priority)


def lower_priority() -> None:
    """Lower the calling thread's priority to ``BACKGROUND_NICENESS`` (Linux)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
    except (AttributeError, OSError) as error:
        log.info("background thread keeps the process's priority: %s", error)


@dataclass
class PartitionJobs:
    """Jobs of one kind on one background thread: at most one queued or running per
    partition, each partition's started at most every ``interval_seconds`` (monotonic)."""

    name: str
    interval_seconds: float
    running: dict[int, Future[Any]] = field(default_factory=dict)
    due: Throttle = field(init=False)
    thread: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.due = Throttle(self.interval_seconds)
        self.thread = background_thread(self.name)

    def busy(self, partition: int) -> bool:
        """Whether a job of the partition is queued or running."""
        running = self.running.get(partition)
        return running is not None and not running.done()

    def claim(self, partition: int, now: float | None = None) -> bool:
        """Whether a job of the partition may start at ``now`` (default the clock's): none is
        queued or running and the interval has passed since the last start, recorded if so."""
        return not self.busy(partition) and self.due.due(partition, now)

    def start(self, partition: int, job: Callable[..., T], *args: Any) -> Future[T]:
        """``job(*args)`` on the thread, as the partition's running job."""
        started = self.thread.submit(job, *args)
        self.running[partition] = started
        return started
