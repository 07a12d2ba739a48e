"""Atomic publication: the prices hash, the sequence and the ticks stream move together."""

from __future__ import annotations

from decimal import Decimal

import redis

from marginwatch.base import keys
from marginwatch.base.ticks import Tick, newest_sequence, ticks_from_prices_hash
from marginwatch.producer.publisher import Publisher, script_arguments

T0 = 1_700_000_000_000


def stream_entries(client: redis.Redis) -> list[dict[str, str]]:
    """The ticks stream's entries as text dictionaries, oldest first."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(keys.TICKS)  # type: ignore[assignment]
    return [
        {field.decode(): value.decode() for field, value in fields.items()}
        for _id, fields in entries
    ]


def test_publish_writes_hash_sequence_and_stream_consistently(redis_client: redis.Redis) -> None:
    """Each tick gets the next sequence, in the hash JSON and in the stream notice alike."""
    ticks = [
        Tick("BTCUSDT", Decimal("67250.50"), T0),
        Tick("ETHUSDT", Decimal("3500.1"), T0 + 5),
        Tick("BTCUSDT", Decimal("67251.00000000"), T0 + 1000),
    ]
    outcome = Publisher(redis_client).publish(ticks)
    assert [tick.sequence for tick in outcome.published] == [1, 2, 3]
    assert outcome.stale == []
    stored = ticks_from_prices_hash(redis_client.hgetall(keys.PRICES))
    assert stored == {
        "BTCUSDT": Tick("BTCUSDT", Decimal("67251.00000000"), T0 + 1000, 3),
        "ETHUSDT": Tick("ETHUSDT", Decimal("3500.1"), T0 + 5, 2),
    }
    assert redis_client.hget(keys.PRICES, "BTCUSDT") == stored["BTCUSDT"].to_json().encode()
    assert int(redis_client.get(keys.TICK_SEQUENCE) or 0) == newest_sequence(stored) == 3
    assert stream_entries(redis_client) == [
        {"s": "BTCUSDT", "p": "67250.50", "E": str(T0), "seq": "1"},
        {"s": "ETHUSDT", "p": "3500.1", "E": str(T0 + 5), "seq": "2"},
        {"s": "BTCUSDT", "p": "67251.00000000", "E": str(T0 + 1000), "seq": "3"},
    ]


def test_script_refuses_stale_tick_from_a_second_publisher(redis_client: redis.Redis) -> None:
    """A second producer with no memory of the first cannot move a price back in time."""
    Publisher(redis_client).publish([Tick("BTCUSDT", Decimal("100"), T0 + 1000)])
    outcome = Publisher(redis_client).publish(
        [Tick("BTCUSDT", Decimal("90"), T0), Tick("BTCUSDT", Decimal("101"), T0 + 1000)]
    )
    assert outcome.stale == [Tick("BTCUSDT", Decimal("90"), T0)]
    assert outcome.published == [Tick("BTCUSDT", Decimal("101"), T0 + 1000, 2)]
    assert redis_client.get(keys.TICK_SEQUENCE) == b"2"
    assert [entry["p"] for entry in stream_entries(redis_client)] == ["100", "101"]
    stored = Tick.from_json(redis_client.hget(keys.PRICES, "BTCUSDT") or b"")
    assert stored == Tick("BTCUSDT", Decimal("101"), T0 + 1000, 2)


def test_large_burst_is_split_into_pipelined_calls_in_order(redis_client: redis.Redis) -> None:
    """A burst larger than one call keeps its order and gets consecutive sequences."""
    ticks = [Tick(f"S{i % 200}USDT", Decimal(i + 1), T0 + i) for i in range(2_050)]
    outcome = Publisher(redis_client, ticks_per_call=300).publish(ticks)
    assert [tick.sequence for tick in outcome.published] == list(range(1, 2_051))
    assert redis_client.hlen(keys.PRICES) == 200
    assert redis_client.xlen(keys.TICKS) == 2_050
    last = Tick.from_json(redis_client.hget(keys.PRICES, "S49USDT") or b"")
    assert last == Tick("S49USDT", Decimal(2_050), T0 + 2_049, 2_050)


def test_stream_is_trimmed_to_about_its_max_length(redis_client: redis.Redis) -> None:
    """The change-notice stream stays near stream_max_length (approximate trimming)."""
    publisher = Publisher(redis_client, stream_max_length=100)
    for round_number in range(10):
        publisher.publish(
            [Tick("BTCUSDT", Decimal(1), T0 + round_number * 100 + i) for i in range(100)]
        )
    assert 100 <= redis_client.xlen(keys.TICKS) < 300


def test_publish_of_nothing_does_nothing(redis_client: redis.Redis) -> None:
    """An empty batch makes no call and no sequence."""
    outcome = Publisher(redis_client).publish([])
    assert (outcome.published, outcome.stale) == ([], [])
    assert redis_client.exists(keys.TICK_SEQUENCE) == 0


def test_script_arguments_splice_the_contract_json() -> None:
    """The JSON around the sequence is exactly Tick.to_json with the sequence left out."""
    tick = Tick("BTCUSDT", Decimal("0.00001234"), T0)
    symbol, mark_price, event_time_ms, before, after = script_arguments(tick)
    assert (symbol, mark_price, event_time_ms) == ("BTCUSDT", "0.00001234", T0)
    assert before + "42" + after == Tick("BTCUSDT", Decimal("0.00001234"), T0, 42).to_json()
