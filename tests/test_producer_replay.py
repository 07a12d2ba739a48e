"""Replay of recorded CSV and JSONL files through the validator into Redis."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from marginwatch.base import keys
from marginwatch.base.ticks import Tick, ticks_from_prices_hash
from marginwatch.producer.publisher import Publisher
from marginwatch.producer.replay import ReplayFileError, replay_source
from marginwatch.producer.run import ProducerStats, run_producer
from marginwatch.producer.ticks import Batch, RawTick, Source, wall_clock_ms
from marginwatch.producer.validation import TickValidator

T0 = 1_700_000_000_000
KNOWN = {"BTCUSDT", "ETHUSDT"}


def replay_into_redis(client: redis.Redis, source: Source) -> ProducerStats:
    """Run the producer over ``source`` until it ends."""
    return run_producer(client, source, TickValidator(KNOWN), Publisher(client), None)


def collect(source: Source) -> list[Batch]:
    """Every batch of ``source``."""

    async def batches() -> list[Batch]:
        return [batch async for batch in source]

    return asyncio.run(batches())


def test_csv_replay_publishes_rows_and_counts_bad_ones(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Good rows land in Redis in order; a negative price and a short row are rejects."""
    path = tmp_path / "ticks.csv"
    path.write_text(
        "event_time,symbol,mark_price,extra\n"
        f"{T0},BTCUSDT,67250.50,x\n"
        f"{T0 + 10},ETHUSDT,3500.25,x\n"
        f"{T0 + 1000},BTCUSDT,-1,x\n"
        f"{T0 + 1500},BTCUSDT\n"
        f"{T0 + 2000},BTCUSDT,67100.00,x\n"
    )
    stats = replay_into_redis(redis_client, replay_source(path, speed=0))
    assert stats.published == 3
    assert stats.rejects == {"not_positive": 1, "malformed": 1}
    assert stats.last_reject_messages == {
        "not_positive": "ticks.csv:4: mark_price: must be positive",
        "malformed": "ticks.csv:5: mark_price: missing",
    }
    assert ticks_from_prices_hash(redis_client.hgetall(keys.PRICES)) == {
        "BTCUSDT": Tick("BTCUSDT", Decimal("67100.00"), T0 + 2000, 3),
        "ETHUSDT": Tick("ETHUSDT", Decimal("3500.25"), T0 + 10, 2),
    }


def test_jsonl_replay_reads_numbers_as_decimals_and_rejects_bad_lines(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    """JSON numbers keep their digits; bad JSON, non-objects, missing keys are rejects."""
    path = tmp_path / "ticks.jsonl"
    path.write_text(
        f'{{"symbol": "BTCUSDT", "event_time": {T0}, "mark_price": 67250.1}}\n'
        "\n"
        '{"symbol": "BTCUSDT", "event_time": \n'
        "[1, 2, 3]\n"
        f'{{"symbol": "ETHUSDT", "event_time": {T0}}}\n'
        f'{{"symbol": "DOGEUSDT", "event_time": {T0}, "mark_price": "0.1"}}\n'
        f'{{"symbol": "BTCUSDT", "event_time": {T0 - 1}, "mark_price": "1"}}\n'
        f'{{"symbol": "ETHUSDT", "event_time": {T0 + 5}, "mark_price": "3500"}}\n'
    )
    stats = replay_into_redis(redis_client, replay_source(path, speed=0))
    assert stats.published == 2
    assert stats.rejects == {"malformed": 3, "unknown_symbol": 1, "older_event_time": 1}
    assert stats.last_reject_messages["malformed"] == "ticks.jsonl:5: mark_price: missing"
    stored = ticks_from_prices_hash(redis_client.hgetall(keys.PRICES))
    assert str(stored["BTCUSDT"].mark_price) == "67250.1"
    assert stored["ETHUSDT"] == Tick("ETHUSDT", Decimal("3500"), T0 + 5, 2)


def test_speed_factor_keeps_the_recorded_pacing(tmp_path: Path) -> None:
    """Ticks recorded a second apart, replayed at speed 10, arrive 100 ms apart."""
    path = tmp_path / "ticks.csv"
    rows = [f"BTCUSDT,{T0 + 1000 * i},{100 + i}" for i in range(4)]
    path.write_text("symbol,event_time,mark_price\n" + "\n".join(rows) + "\n")
    started = time.monotonic()
    batches = collect(replay_source(path, speed=10))
    elapsed_seconds = time.monotonic() - started
    assert [len(batch) for batch in batches] == [1, 1, 1, 1]
    assert elapsed_seconds >= 0.28  # three gaps of 100 ms were waited out


def test_as_fast_as_possible_batches_the_whole_file(tmp_path: Path) -> None:
    """Speed 0 does not wait and sends the rows in batches of at most max_batch."""
    path = tmp_path / "ticks.csv"
    rows = [f"BTCUSDT,{T0 + 1000 * i},{100 + i}" for i in range(1_200)]
    path.write_text("symbol,event_time,mark_price\n" + "\n".join(rows) + "\n")
    batches = collect(replay_source(path, speed=0, max_batch=500))
    assert [len(batch) for batch in batches] == [500, 500, 200]


def test_rebase_shifts_event_times_to_the_start_of_the_replay(tmp_path: Path) -> None:
    """With rebase_to_now the first event time is now and the spacing is kept."""
    path = tmp_path / "ticks.csv"
    path.write_text(f"symbol,event_time,mark_price\nBTCUSDT,{T0},1\nBTCUSDT,{T0 + 250},2\n")
    before_ms = wall_clock_ms()
    [batch] = collect(replay_source(path, speed=0, rebase_to_now=True))
    first, second = (item.event_time_ms for item in batch if isinstance(item, RawTick))
    assert isinstance(first, int)
    assert before_ms <= first <= wall_clock_ms()
    assert second == first + 250


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        (
            "ticks.csv",
            "symbol,time,mark_price\n",
            "the CSV header must name symbol,event_time,mark_price; no event_time",
        ),
        ("ticks.txt", "", "unknown format (expected a .csv or .jsonl file)"),
    ],
)
def test_unusable_files_are_refused_before_the_replay(
    tmp_path: Path, name: str, text: str, problem: str
) -> None:
    """A wrong header or suffix is an error when the source is built."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ReplayFileError) as caught:
        replay_source(path)
    assert str(caught.value) == f"{path}: {problem}"


def test_missing_file_is_refused(tmp_path: Path) -> None:
    """A file that does not exist is an error naming it."""
    with pytest.raises(ReplayFileError) as caught:
        replay_source(tmp_path / "none.csv")
    assert str(caught.value) == f"{tmp_path / 'none.csv'}: no such file"
