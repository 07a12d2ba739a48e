"""Fan-out: change notices become at most one pending evaluation per partition.

A dispatcher thread in each ``marginwatch worker`` process reads the tick stream and its
partitions' account-change streams. For every partition with news it sets the partition's
pending flag (``SET NX`` with a TTL) and, only if the flag was not already set, enqueues one
evaluation on the partition's queue. The evaluation clears the flag as it starts, so ticks that
arrive meanwhile queue exactly one more evaluation, which reads the newest prices: a storm of
ticks coalesces instead of building a backlog. The TTL re-arms a partition whose task was lost
(its dispatcher died between setting the flag and enqueuing): a starting dispatcher clears its
partitions' flags first, so a restarted worker evaluates them at once.
The dispatcher blocks on the tick stream only (a change on a quiet market waits at most
``READ_BLOCK_MS``), since one read of several streams would span hash slots.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from marginwatch.base import crash, keys

PENDING_TTL_SECONDS = 10
READ_BLOCK_MS = 250
QUIET_EVALUATION_SECONDS = 1.0

Enqueue = Callable[[int], None]
OnPending = Callable[[Sequence[int]], None]


class Dispatcher:
    """Reads change notices and enqueues evaluations for ``partitions``."""

    def __init__(
        self,
        client: redis.Redis,
        partitions: Sequence[int],
        enqueue: Enqueue,
        *,
        on_pending: OnPending | None = None,
        on_round: Callable[[], None] | None = None,
    ) -> None:
        """``on_pending`` is told which partitions have their pending flag set (metrics);
        ``on_round`` is called each time round the loop of ``run`` (a heartbeat)."""
        self.client = client
        self.partitions = list(partitions)
        self.enqueue = enqueue
        self.on_pending = on_pending
        self.on_round = on_round
        self.last_ids: dict[str, str] = {}
        self.enqueued = 0
        self.all_triggered_at = -math.inf  # monotonic seconds

    def start_from_now(self) -> None:
        """Skip what is already on the streams (the first evaluation reads the current state).

        The newest id of each stream is read, not ``$``: ``$`` only means "after this call", so
        entries added between two reads of a quiet stream would be missed.
        """
        self.last_ids = {stream: self._newest_id(stream) for stream in self._streams()}
        self.all_triggered_at = time.monotonic()

    def _newest_id(self, stream: str) -> str:
        newest: list[Any] = self.client.xrevrange(stream, count=1)  # type: ignore[assignment]
        return newest[0][0].decode() if newest else "0-0"

    def _streams(self) -> list[str]:
        return [keys.TICKS, *(keys.partition_changes(p) for p in self.partitions)]

    def trigger(self, partitions: Sequence[int]) -> int:
        """Enqueue an evaluation for each partition that has none pending."""
        pipe = self.client.pipeline(transaction=False)
        for partition in partitions:
            pipe.set(keys.partition_pending(partition), 1, nx=True, ex=PENDING_TTL_SECONDS)
        armed = [p for p, was_set in zip(partitions, pipe.execute(), strict=True) if was_set]
        crash.at("dispatcher:after-pending-flags")
        if self.on_pending is not None:
            self.on_pending(armed)  # before they are enqueued: the evaluation clears it
        for partition in armed:
            self.enqueue(partition)
        self.enqueued += len(armed)
        return len(armed)

    def dispatch_once(self, block_ms: int | None = READ_BLOCK_MS) -> int:
        """Wait for a tick notice (up to ``block_ms``), read every partition's change notices,
        then trigger the partitions they concern. Each ``XREAD`` reads one stream (one hash
        slot); the change streams are read in one pipeline, without blocking."""
        touched: set[int] = set()
        ticked = self._read_new([keys.TICKS], block_ms)[0]
        if ticked or self._quiet_for_a_while():
            self.all_triggered_at = time.monotonic()
            touched.update(self.partitions)
        streams = [keys.partition_changes(p) for p in self.partitions]
        news = self._read_new(streams, None)
        touched.update(p for p, new in zip(self.partitions, news, strict=True) if new)
        return self.trigger(sorted(touched)) if touched else 0

    def _quiet_for_a_while(self) -> bool:
        """Every ``QUIET_EVALUATION_SECONDS`` without a tick, each partition is evaluated all
        the same: its once-a-second repairs (actions sent again, episode flags taken from
        Redis) must not wait for the market to move."""
        return time.monotonic() - self.all_triggered_at >= QUIET_EVALUATION_SECONDS

    def _read_new(self, streams: Sequence[str], block_ms: int | None) -> list[bool]:
        """For each stream, whether it has entries after the last id read (which advances)."""
        pipe = self.client.pipeline(transaction=False)
        for stream in streams:
            pipe.xread({stream: self.last_ids[stream]}, block=block_ms, count=10_000)
        replies: list[Any] = pipe.execute()
        for stream, reply in zip(streams, replies, strict=True):
            for _name, entries in reply or []:
                self.last_ids[stream] = entries[-1][0].decode()
        return [bool(reply) for reply in replies]

    def clear_pending(self) -> None:
        """Drop the partitions' pending flags (one ``DEL`` per key: one hash slot each)."""
        pipe = self.client.pipeline(transaction=False)
        for partition in self.partitions:
            pipe.delete(keys.partition_pending(partition))
        pipe.execute()

    def run(self, stop: threading.Event) -> None:
        """Dispatch until ``stop`` is set; the first round evaluates every partition, whatever
        flags a dispatcher that died left behind."""
        self.start_from_now()
        self.clear_pending()
        self.trigger(self.partitions)
        while not stop.is_set():
            if self.on_round is not None:
                self.on_round()
            self.dispatch_once()
