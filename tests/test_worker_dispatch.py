"""Fan-out: change notices coalesce into at most one pending evaluation per partition."""

from __future__ import annotations

import threading
from decimal import Decimal

import redis

from marginwatch.base import keys
from marginwatch.base.ticks import Tick
from marginwatch.worker.dispatch import QUIET_EVALUATION_SECONDS, Dispatcher
from tests.polling import wait_for


class Enqueued(list[int]):
    """Records the partitions an evaluation was enqueued for."""

    def __call__(self, partition: int) -> None:
        self.append(partition)


def publish_notice(client: redis.Redis, sequence: int) -> None:
    """A change notice on the tick stream, as the producer writes it."""
    tick = Tick("BTCUSDT", mark_price=Decimal("50000"),
                event_time_ms=sequence, sequence=sequence)  # fmt: skip
    client.xadd(keys.TICKS, {"s": tick.symbol, "p": str(tick.mark_price),
                             "E": tick.event_time_ms, "seq": tick.sequence})  # fmt: skip


def test_trigger_enqueues_once_until_the_evaluation_starts(redis_client: redis.Redis) -> None:
    """A second trigger while one is pending adds nothing; after the flag clears it does."""
    enqueued = Enqueued()
    dispatcher = Dispatcher(redis_client, [0, 1], enqueued)
    assert dispatcher.trigger([0, 1]) == 2
    assert dispatcher.trigger([0, 1]) == 0
    redis_client.delete(keys.partition_pending(1))  # partition 1's evaluation started
    assert dispatcher.trigger([0, 1]) == 1
    assert enqueued == [0, 1, 1]


def test_pending_flag_expires(redis_client: redis.Redis) -> None:
    """The pending flag has a TTL, so a lost task does not stall its partition."""
    Dispatcher(redis_client, [3], Enqueued()).trigger([3])
    assert 0 < redis_client.ttl(keys.partition_pending(3)) <= 10


def test_a_starting_dispatcher_evaluates_every_partition_despite_stale_flags(
    redis_client: redis.Redis,
) -> None:
    """A dispatcher killed after setting the flags, before enqueuing: its restart clears them
    and enqueues every partition at once, not after the flags' TTL."""
    Dispatcher(redis_client, [0, 1, 2], Enqueued()).trigger([0, 1])  # then killed: no tasks
    enqueued = Enqueued()
    restarted = Dispatcher(redis_client, [0, 1, 2], enqueued)
    stop = threading.Event()
    thread = threading.Thread(target=restarted.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: sorted(enqueued) == [0, 1, 2], lambda: f"enqueued {enqueued}", timeout=5)
    finally:
        stop.set()
        thread.join(timeout=5)


def test_a_storm_of_ticks_coalesces(redis_client: redis.Redis) -> None:
    """100 notices read in one round give one evaluation per partition."""
    enqueued = Enqueued()
    dispatcher = Dispatcher(redis_client, [0, 1, 2], enqueued)
    dispatcher.start_from_now()
    for sequence in range(1, 101):
        publish_notice(redis_client, sequence)
    assert dispatcher.dispatch_once(block_ms=None) == 3
    assert sorted(enqueued) == [0, 1, 2]
    for sequence in range(101, 201):
        publish_notice(redis_client, sequence)
    assert dispatcher.dispatch_once(block_ms=None) == 0  # all three still pending


def test_account_change_wakes_only_its_partition(redis_client: redis.Redis) -> None:
    """A change on partition 2's stream enqueues partition 2 alone."""
    enqueued = Enqueued()
    dispatcher = Dispatcher(redis_client, [0, 1, 2], enqueued)
    dispatcher.start_from_now()
    redis_client.xadd(keys.partition_changes(2), {"account": "x", "version": 2})
    assert dispatcher.dispatch_once(block_ms=None) == 1
    assert enqueued == [2]


def test_a_quiet_market_still_evaluates_every_partition_each_second(
    redis_client: redis.Redis,
) -> None:
    """No notice for a second: every partition is triggered all the same (its repairs run)."""
    enqueued = Enqueued()
    dispatcher = Dispatcher(redis_client, [0, 1], enqueued)
    dispatcher.start_from_now()
    assert dispatcher.dispatch_once(block_ms=None) == 0
    dispatcher.all_triggered_at -= QUIET_EVALUATION_SECONDS  # a quiet second went by
    assert dispatcher.dispatch_once(block_ms=None) == 2
    assert sorted(enqueued) == [0, 1]
