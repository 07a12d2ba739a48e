"""The Binance mark-price websocket source, against a local websocket server."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from decimal import Decimal
from types import TracebackType

import pytest
import redis
from websockets.asyncio.server import ServerConnection, serve

from marginwatch.base import keys
from marginwatch.base.ticks import Tick, ticks_from_prices_hash
from marginwatch.cli.embedded_redis import free_port
from marginwatch.producer.binance import ReconnectPolicy, binance_source, parse_frame
from marginwatch.producer.publisher import Publisher
from marginwatch.producer.run import ProducerStats, run_producer
from marginwatch.producer.ticks import Batch, Malformed, RawTick
from marginwatch.producer.validation import TickValidator
from tests.polling import wait_for

T0 = 1_700_000_000_000
KNOWN = {"BTCUSDT", "ETHUSDT"}
FAST_RECONNECT = ReconnectPolicy(0.05, 0.2, max_connections=5, open_timeout_seconds=2.0)


def update(symbol: str, mark_price: str, event_time_ms: int) -> dict[str, object]:
    """A ``markPriceUpdate`` event as Binance sends it."""
    return {
        "e": "markPriceUpdate",
        "E": event_time_ms,
        "s": symbol,
        "p": mark_price,
        "i": mark_price,
        "P": mark_price,
        "r": "0.00038167",
        "T": event_time_ms + 3_600_000,
    }


class LocalMarkPriceServer:
    """A websocket server on 127.0.0.1 (free port), in its own thread and event loop.

    Connection n gets the frames of ``scripts[n]``; every connection but the last is then
    closed by the server, the last is held open.
    """

    def __init__(self, scripts: list[list[str]]) -> None:
        self.scripts = scripts
        self.connections = 0
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/!markPrice@arr@1s"

    def __enter__(self) -> LocalMarkPriceServer:
        self._thread.start()
        assert self._ready.wait(5), "the local websocket server did not start"
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with serve(self._handle, "127.0.0.1", 0) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _handle(self, websocket: ServerConnection) -> None:
        number, self.connections = self.connections, self.connections + 1
        for frame in self.scripts[number] if number < len(self.scripts) else []:
            await websocket.send(frame)
        if number >= len(self.scripts) - 1:
            await websocket.wait_closed()


def test_frames_reach_redis_across_a_reconnect_and_a_malformed_frame_is_a_reject(
    redis_client: redis.Redis,
) -> None:
    """Array, single-object and combined-stream frames publish; bad JSON is counted only."""
    first = [
        json.dumps([update("BTCUSDT", "11794.15000000", T0), update("ETHUSDT", "3500.1", T0)]),
        "{not json",
        json.dumps(update("BTCUSDT", "11795.00000000", T0 + 1000)),
    ]
    second = [
        json.dumps(
            {"stream": "!markPrice@arr@1s", "data": [update("BTCUSDT", "11790.5", T0 + 2000)]}
        )
    ]
    stats, stop = ProducerStats(), threading.Event()
    with LocalMarkPriceServer([first, second]) as server:
        source = binance_source(server.url, FAST_RECONNECT)
        validator, publisher = TickValidator(KNOWN), Publisher(redis_client)
        thread = threading.Thread(
            target=run_producer,
            args=(redis_client, source, validator, publisher, stop),
            kwargs={"stats": stats},
        )
        thread.start()
        try:
            wait_for(lambda: stats.published == 4, "4 ticks published", timeout=10.0, interval=0.01)
        finally:
            stop.set()
            thread.join(5)
        assert not thread.is_alive()
        assert server.connections == 2
    assert stats.rejects == {"malformed": 1}
    assert stats.last_reject_messages["malformed"].startswith("connection 1: frame: not valid JSON")
    assert ticks_from_prices_hash(redis_client.hgetall(keys.PRICES)) == {
        "BTCUSDT": Tick("BTCUSDT", Decimal("11790.5"), T0 + 2000, 4),
        "ETHUSDT": Tick("ETHUSDT", Decimal("3500.1"), T0, 2),
    }


def test_stop_ends_the_producer_while_the_connection_is_idle(redis_client: redis.Redis) -> None:
    """With no frames coming, setting stop still ends the producer."""
    stop = threading.Event()
    with LocalMarkPriceServer([[]]) as server:
        source = binance_source(server.url, FAST_RECONNECT)
        validator, publisher = TickValidator(KNOWN), Publisher(redis_client)
        thread = threading.Thread(
            target=run_producer, args=(redis_client, source, validator, publisher, stop)
        )
        thread.start()
        wait_for(lambda: server.connections == 1, "a connection", timeout=10.0, interval=0.01)
        stop.set()
        thread.join(5)
        assert not thread.is_alive()


def test_unreachable_server_is_retried_with_doubling_delays_then_given_up() -> None:
    """Four failed connections wait 0.05 + 0.1 + 0.2 s between them, then the source ends."""
    policy = ReconnectPolicy(0.05, 0.2, max_connections=4, open_timeout_seconds=1.0)

    async def collect() -> list[Batch]:
        return [batch async for batch in binance_source(f"ws://127.0.0.1:{free_port()}/ws", policy)]

    started = time.monotonic()
    assert asyncio.run(collect()) == []
    assert time.monotonic() - started >= 0.35  # it waited out the three delays
    assert [policy.delay_seconds(failures) for failures in range(5)] == [0.05, 0.05, 0.1, 0.2, 0.2]


def test_frame_shapes_array_object_and_combined_stream() -> None:
    """An array gives one tick per event; an object or a wrapped payload gives its ticks."""
    event = update("BTCUSDT", "11794.15000000", T0)
    expected = RawTick("BTCUSDT", "11794.15000000", T0, "c")
    assert parse_frame(json.dumps([event, event]), "c") == [expected, expected]
    assert parse_frame(json.dumps(event).encode(), "c") == [expected]
    assert parse_frame(json.dumps({"stream": "s", "data": event}), "c") == [expected]
    assert parse_frame(json.dumps({"stream": "s", "data": [event]}), "c") == [expected]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("42", "frame: expected a JSON array or object"),
        ("[1]", "frame: an event must be a JSON object"),
        ('{"e": "kline", "s": "BTCUSDT"}', "e: expected 'markPriceUpdate', got 'kline'"),
        (
            '{"e": "markPriceUpdate", "s": "BTCUSDT", "E": 1}',
            "p: missing from the markPriceUpdate event",
        ),
    ],
)
def test_frames_that_are_not_mark_prices_are_malformed(frame: str, message: str) -> None:
    """Anything but markPriceUpdate events becomes a Malformed item naming the field."""
    assert parse_frame(frame, "c") == [Malformed(message, "c")]
