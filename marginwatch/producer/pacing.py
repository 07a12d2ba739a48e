"""Turning timed items into batches: paced by their due time, or as fast as possible."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from marginwatch.producer.ticks import Batch, RawTick, Source, SourceItem

DEFAULT_MAX_BATCH = 500


async def paced_batches(
    timed_items: Iterable[tuple[float, SourceItem]],
    *,
    paced: bool,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Source:
    """Batches of items, each ``(due_seconds, item)`` released ``due_seconds`` after the first
    iteration when ``paced``; items due together share a batch of at most ``max_batch``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    batch: Batch = []
    for due_seconds, item in timed_items:
        if paced and batch and started + due_seconds > loop.time():
            yield batch
            batch = []
        if paced:
            await asyncio.sleep(max(0.0, started + due_seconds - loop.time()))
        batch.append(item)
        if len(batch) >= max_batch:
            yield batch
            batch = []
    if batch:
        yield batch


async def only_symbols(source: Source, symbols: frozenset[str]) -> Source:
    """``source`` without the ticks of other symbols (dropped silently, not rejects)."""
    try:
        async for batch in source:
            kept = [item for item in batch if _kept(item, symbols)]
            if kept:
                yield kept
    finally:
        await source.aclose()


def _kept(item: SourceItem, symbols: frozenset[str]) -> bool:
    """Whether ``item`` passes the filter (non-ticks always do: they are rejects)."""
    return not isinstance(item, RawTick) or item.symbol in symbols
