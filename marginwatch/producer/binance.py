"""Binance USD-M mark prices from the ``!markPrice@arr@1s`` websocket stream.

A frame is a JSON array of ``markPriceUpdate`` objects (``s`` symbol, ``p`` mark price as a
string, ``E`` event time in ms), a single such object, or either wrapped by the combined
stream as ``{"stream": ..., "data": ...}``. A frame that is none of these is a ``Malformed``
reject. On a disconnect or a failed connection the source reconnects after a delay that
doubles up to a maximum (reset once a connection delivers a frame).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from marginwatch.base.redaction import redact_url
from marginwatch.producer.ticks import Batch, Malformed, RawTick, Source, SourceItem

DEFAULT_URL = "wss://fstream.binance.com/ws/!markPrice@arr@1s"
MARK_PRICE_EVENT = "markPriceUpdate"
MAX_FRAME_BYTES = 1 << 22

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Delays between connection attempts; ``max_connections`` None: reconnect forever."""

    initial_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0
    max_connections: int | None = None
    open_timeout_seconds: float = 10.0

    def delay_seconds(self, failures: int) -> float:
        """The wait before the next attempt after ``failures`` fruitless connections in a row."""
        return float(
            min(self.max_delay_seconds, self.initial_delay_seconds * 2 ** max(0, failures - 1))
        )

    def may_connect(self, connections: int) -> bool:
        """Whether a connection may be opened after ``connections`` so far."""
        return self.max_connections is None or connections < self.max_connections


async def binance_source(url: str = DEFAULT_URL, policy: ReconnectPolicy | None = None) -> Source:
    """One batch per frame, across reconnections, until ``policy.max_connections`` is used."""
    policy = policy or ReconnectPolicy()
    connections = failures = 0
    while policy.may_connect(connections):
        if connections:
            await asyncio.sleep(policy.delay_seconds(failures))
        connections += 1
        frames = 0
        async with aclosing(connection_batches(url, policy, connections)) as batches:
            async for batch in batches:
                frames += 1
                yield batch
        failures = 0 if frames else failures + 1


async def connection_batches(
    url: str, policy: ReconnectPolicy, connection: int
) -> AsyncGenerator[Batch, None]:
    """The batches of one connection; it ends (logged) when the connection fails or closes."""
    shown = redact_url(url)
    try:
        async with connect(
            url, open_timeout=policy.open_timeout_seconds, max_size=MAX_FRAME_BYTES
        ) as websocket:
            logger.info("connected to %s (connection %d)", shown, connection)
            async for frame in websocket:
                yield parse_frame(frame, f"connection {connection}")
        logger.warning("%s closed the connection", shown)
    except (OSError, TimeoutError, WebSocketException) as error:
        logger.warning("connection to %s failed: %s", shown, error or type(error).__name__)


def parse_frame(frame: str | bytes, origin: str) -> Batch:
    """The ticks of one frame; a frame that is not one is a single ``Malformed`` item."""
    try:
        document = json.loads(frame)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return [Malformed(f"frame: not valid JSON ({error})", origin)]
    if isinstance(document, dict) and "stream" in document and "data" in document:
        document = document["data"]
    if isinstance(document, dict):
        return [event_item(document, origin)]
    if isinstance(document, list):
        return [event_item(event, origin) for event in document]
    return [Malformed("frame: expected a JSON array or object", origin)]


def event_item(event: object, origin: str) -> SourceItem:
    """A raw tick from one ``markPriceUpdate`` object, or why it is not one."""
    if not isinstance(event, dict):
        return Malformed("frame: an event must be a JSON object", origin)
    if event.get("e", MARK_PRICE_EVENT) != MARK_PRICE_EVENT:
        return Malformed(f"e: expected {MARK_PRICE_EVENT!r}, got {event['e']!r}", origin)
    for field in ("s", "p", "E"):
        if field not in event:
            return Malformed(f"{field}: missing from the {MARK_PRICE_EVENT} event", origin)
    return RawTick(event["s"], event["p"], event["E"], origin)
