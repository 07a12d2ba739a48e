"""Partition evaluation: batch screening, exact confirmation, one action per transition."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest
import redis

from marginwatch.contract import Tick
from marginwatch.engine import batch
from marginwatch.engine.brackets import default_tables
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.settings import Settings
from marginwatch.state.accounts import store_accounts
from producer.publisher import Publisher
from worker.celery_app import TASK_LIQUIDATE, TASK_MARGIN_CALL, TASK_MARGIN_CALL_RESOLVED
from worker.evaluation import evaluate_partition
from worker.partition import PartitionBook

D = Decimal
SETTINGS = Settings(redis_url="unused", partitions=1)
# Cross long 1 BTC from 50,000 with 1,265 in the wallet: MM = P × 0.4%, MB = 1,265 + P − 50,000.
ACCOUNT = Account("E", D(1265), (Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS),))
EVENT_TIMES = itertools.count(1_700_000_000_000, 100)


class Sent(list[tuple[str, dict[str, Any]]]):
    """Records the actions an evaluation sends."""

    def __call__(self, task: str, payload: dict[str, Any]) -> None:
        self.append((task, payload))

    def tasks(self) -> list[str]:
        return [task for task, _ in self]


@pytest.fixture
def book(redis_client: redis.Redis) -> PartitionBook:
    """Partition 0 of a one-partition deployment holding ACCOUNT, loaded."""
    store_accounts(redis_client, [ACCOUNT], partitions=1)
    tables = dict(default_tables())
    loaded = PartitionBook(0, batch.BracketArrays.from_tables(tables, sorted(tables)), tables)
    loaded.load(redis_client)
    return loaded


def at_price(client: redis.Redis, book: PartitionBook, price: str) -> list[str]:
    """Publish a BTCUSDT mark, evaluate the partition, return the tasks sent."""
    Publisher(client).publish([Tick("BTCUSDT", D(price), next(EVENT_TIMES))])
    sent = Sent()
    evaluate_partition(book, client, SETTINGS, sent)
    return sent.tasks()


def test_margin_call_once_per_episode_with_hysteresis(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """Enter at 0.8, stay quiet above 0.75, resolve below 0.75, then a new episode."""
    assert at_price(redis_client, book, "49000") == []  # 196 / 265 = 0.7396: warning
    assert at_price(redis_client, book, "48950") == [TASK_MARGIN_CALL]  # 195.8 / 215 = 0.911
    assert at_price(redis_client, book, "48989.5") == []  # 195.958 / 254.5 = 0.77
    assert at_price(redis_client, book, "48950") == []  # same episode
    assert at_price(redis_client, book, "49000") == [TASK_MARGIN_CALL_RESOLVED]  # 0.7396 < 0.75
    assert at_price(redis_client, book, "48950") == [TASK_MARGIN_CALL]  # a new episode


def test_liquidation_is_sent_once_per_version(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """MB = 1,265 − 1,300 < 0: margin call and liquidation, once, until the account changes."""
    assert at_price(redis_client, book, "48700") == [TASK_MARGIN_CALL, TASK_LIQUIDATE]
    assert at_price(redis_client, book, "48690") == []
    store_accounts(redis_client, [ACCOUNT], partitions=1)  # version 2, same state
    assert at_price(redis_client, book, "48680") == [TASK_LIQUIDATE]


def test_action_names_pool_version_and_triggering_tick(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """The payload says which pool, at which version, and which tick triggered it."""
    Publisher(redis_client).publish([Tick("BTCUSDT", D("48950"), 1_700_000_100_000)])
    sent = Sent()
    evaluate_partition(book, redis_client, SETTINGS, sent)
    ((task, payload),) = sent
    assert task == TASK_MARGIN_CALL
    assert payload["account_id"] == "E"
    assert payload["pool"] == "cross"
    assert payload["version"] == 1
    assert payload["tick_event_time_ms"] == 1_700_000_100_000
    assert D(payload["detected_ratio"]) == D(48_950) * D("0.004") / D(215)


def test_refresh_reads_changed_accounts_only(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """A deposit (new version) is picked up; the unchanged book is not rebuilt."""
    assert book.refresh(redis_client) == 0
    richer = Account("E", D(20_000), ACCOUNT.positions)
    store_accounts(redis_client, [richer], partitions=1)
    assert book.refresh(redis_client) == 1
    assert book.accounts["E"].version == 2
    assert at_price(redis_client, book, "48700") == []  # rescued by the deposit


def test_episode_survives_a_change_of_layout(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """A new isolated position moves the rows; the cross pool keeps its episode."""
    assert at_price(redis_client, book, "48950") == [TASK_MARGIN_CALL]
    eth = Position("ETHUSDT", D(-1), D(2500), 10, MarginMode.ISOLATED, isolated_wallet=D(300))
    Publisher(redis_client).publish([Tick("ETHUSDT", D(2500), next(EVENT_TIMES))])
    store_accounts(redis_client, [Account("E", D(965), (*ACCOUNT.positions, eth))], partitions=1)
    # MB = 965 − 1,050 < 0 now: the cross pool liquidates, but no second margin call.
    assert at_price(redis_client, book, "48950") == [TASK_LIQUIDATE]
    keys_now = sorted(book.pool_key(pool) for pool in range(book.book.pools))
    assert keys_now == [("E", "cross"), ("E", "isolated:ETHUSDT:BOTH")]
