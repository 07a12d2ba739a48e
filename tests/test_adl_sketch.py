"""The partitions' ADL sketches: written by each partition's worker after an evaluation, at most
every 30 s, and read by ``marginwatch status ACCOUNT`` to rank its positions venue-wide; what
status says when a sketch is missing, old or unreadable."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from marginwatch.base import keys
from marginwatch.base.partitions import partition_of
from marginwatch.base.settings import Settings
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer
from marginwatch.engine import batch
from marginwatch.engine.adl import ScoreSketch
from marginwatch.engine.types import PositionSide
from marginwatch.producer.publisher import Publisher
from marginwatch.state.accounts import store_accounts
from marginwatch.state.adl import read_sketches, write_sketches
from marginwatch.worker import adl_sketch
from marginwatch.worker.evaluation import evaluate_partition, finish_evaluation
from marginwatch.worker.partition import PartitionBook
from tests.adl_book import FLAT, HAND_BOOK, HAND_QUANTILES
from tests.stress_book import write_brackets

PARTITIONS = 2
SETTINGS = Settings(redis_url="unused", partitions=PARTITIONS)
EVENT_TIMES = itertools.count(1_700_000_000_000, 100)
LONG, SHORT = PositionSide.LONG, PositionSide.SHORT


def evaluated_books(client: redis.Redis, price: str) -> list[PartitionBook]:
    """The hand book stored in two partitions, each loaded and evaluated at BTC ``price``."""
    store_accounts(client, list(HAND_BOOK), partitions=PARTITIONS)
    Publisher(client).publish([Tick("BTCUSDT", Decimal(price), next(EVENT_TIMES))])
    arrays = batch.BracketArrays.from_tables(FLAT, ["BTCUSDT"])
    books, publisher = [], adl_sketch.sketch_jobs()
    for partition in range(PARTITIONS):
        book = PartitionBook(partition, arrays, FLAT)
        book.load(client)
        outcome = evaluate_partition(book, client, SETTINGS)
        finish_evaluation(client, book, outcome)
        written = adl_sketch.publish_if_due(publisher, client, book, outcome, now=100.0)
        assert written is not None
        assert written.result(timeout=60)
        books.append(book)
    return books


def test_sketches_are_started_at_most_every_30_s_and_never_twice_at_once(
    redis_client: redis.Redis,
) -> None:
    """Held behind a gate, a started write is not started again 100 s later; once done, not
    again before 30 s have passed since it started (at 129.9 s), and again at 130 s."""
    store_accounts(redis_client, list(HAND_BOOK), partitions=1)
    Publisher(redis_client).publish([Tick("BTCUSDT", Decimal(50_000), next(EVENT_TIMES))])
    book = PartitionBook(0, batch.BracketArrays.from_tables(FLAT, ["BTCUSDT"]), FLAT)
    book.load(redis_client)
    settings = Settings(redis_url="unused", partitions=1)
    outcome = evaluate_partition(book, redis_client, settings)
    publisher, gate = adl_sketch.sketch_jobs(), threading.Event()
    publisher.thread.submit(gate.wait, 60)
    written = adl_sketch.publish_if_due(publisher, redis_client, book, outcome, now=100.0)
    assert written is not None
    assert adl_sketch.publish_if_due(publisher, redis_client, book, outcome, now=200.0) is None
    gate.set()
    assert written.result(timeout=60)
    assert adl_sketch.publish_if_due(publisher, redis_client, book, outcome, now=129.9) is None
    again = adl_sketch.publish_if_due(publisher, redis_client, book, outcome, now=130.0)
    assert again is not None
    assert again.result(timeout=60)


def held_by(partition: int, side: PositionSide) -> int:
    """How many of the hand book's BTC positions of ``side`` the partition holds."""
    return sum(
        1
        for account in HAND_BOOK
        if partition_of(account.account_id, PARTITIONS) == partition
        for p in account.positions
        if (p.quantity > 0) == (side is LONG)
    )


def test_each_worker_writes_its_partition_s_sketches(redis_client: redis.Redis) -> None:
    """After an evaluation, each partition's hash holds a sketch per side of BTCUSDT counting
    its positions there (6 longs and 3 shorts in all), with every score (n <= 64)."""
    evaluated_books(redis_client, "50000")
    read = read_sketches(redis_client, PARTITIONS, [("BTCUSDT", LONG), ("BTCUSDT", SHORT)])
    for found in read:
        assert found.written_at is not None
        assert not found.unreadable
        for side in (LONG, SHORT):
            sketch = found.sketches["BTCUSDT", side]
            assert sketch.count == held_by(found.partition, side)
            assert len(sketch.points) == sketch.count
    assert sum(found.sketches["BTCUSDT", LONG].count for found in read) == 6
    assert sum(found.sketches["BTCUSDT", SHORT].count for found in read) == 3


def status(server: RedisServer, brackets: Path, account_id: str) -> dict[str, Any]:
    """``marginwatch status ACCOUNT`` as JSON (exit 0 and nothing on stderr asserted)."""
    env = {
        **os.environ,
        "MARGINWATCH_REDIS_URL": server.url,
        "MARGINWATCH_PARTITIONS": str(PARTITIONS),
        "MARGINWATCH_BRACKETS_FILE": str(brackets),
    }
    result = subprocess.run([sys.executable, "-m", "marginwatch", "status", account_id], env=env,
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def quantiles(document: dict[str, Any]) -> tuple[int | None, ...]:
    return tuple(p.get("adl_quantile") for p in document["accounts"][0]["positions"])


def test_status_ranks_an_account_venue_wide_from_the_sketches(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """With every partition's sketch, each position gets the quantile the whole book gives it
    (exactly: fewer than 64 scores per partition, so the error bound is 0)."""
    evaluated_books(redis_client, "50000")
    brackets = write_brackets(tmp_path / "brackets.json")
    for account_id in ("d", "f", "c", "g", "e"):
        document = status(redis_server, brackets, account_id)
        assert quantiles(document) == HAND_QUANTILES[account_id], account_id
        adl = document["adl"]
        assert adl["ranked_among"] == "partition_sketches"
        assert adl["rank_error_bound"] == 0
        assert float(adl["sketch_age_seconds"]) >= 0
        assert "note" not in adl


def test_status_without_sketches_says_so(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """No worker has written a sketch: no quantile, and a note naming the partitions; once one
    partition has, the note names the other."""
    store_accounts(redis_client, list(HAND_BOOK), partitions=PARTITIONS)
    Publisher(redis_client).publish([Tick("BTCUSDT", Decimal(50_000), next(EVENT_TIMES))])
    brackets = write_brackets(tmp_path / "brackets.json")
    document = status(redis_server, brackets, "a")
    assert quantiles(document) == (None,)
    assert document["adl"] == {
        "ranked_among": "partition_sketches",
        "note": "adl_quantile left out: no ADL sketch yet from partition 0, 1 (each partition's "
        "worker writes one every 30 s)",
    }
    write_sketches(redis_client, 1, {}, time.time())
    assert "from partition 0 (" in status(redis_server, brackets, "a")["adl"]["note"]


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        ("{not json", "not a sketch"),
        ('{"count": 3, "points": [0.1]}', "1 points for a count of 3"),
        ('{"count": 2, "points": [0.5, 0.1]}', "points must ascend"),
        ('{"count": 1, "points": ["x"]}', "points must be finite numbers"),
    ],
)
def test_status_reports_an_unreadable_sketch(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    tmp_path: Path,
    stored: str,
    reason: str,
) -> None:
    """A sketch that cannot be read is named, key, field and why, in the note; no quantile."""
    evaluated_books(redis_client, "50000")
    redis_client.hset(keys.adl_sketches(1), "BTCUSDT:LONG", stored)
    document = status(redis_server, write_brackets(tmp_path / "brackets.json"), "a")
    assert quantiles(document) == (None,)
    note = document["adl"]["note"]
    assert note.startswith("adl_quantile left out, a sketch cannot be read: ")
    assert f"{keys.adl_sketches(1)} BTCUSDT:LONG: {reason}" in note


def test_status_warns_of_an_old_sketch(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A sketch written 100 s ago still ranks, with its age and a note that it is old."""
    evaluated_books(redis_client, "50000")
    sketch = ScoreSketch.of_sorted([0.0, 1 / 60, 100 / 21])
    write_sketches(redis_client, 0, {("BTCUSDT", LONG): sketch}, time.time() - 100)
    adl = status(redis_server, write_brackets(tmp_path / "brackets.json"), "a")["adl"]
    assert float(adl["sketch_age_seconds"]) >= 100
    assert "is every partition's worker running?" in adl["note"]
