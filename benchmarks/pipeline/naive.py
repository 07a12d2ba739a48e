"""The pipeline benchmark: the naive baseline."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from benchmarks import naive_baseline as naive
from benchmarks.pipeline.book import Book
from benchmarks.pipeline.config import NAIVE_SCRIPT, WORKERS
from benchmarks.pipeline.daemons import producer_command, wait_until
from benchmarks.pipeline.observe import Sample, sample_while
from benchmarks.pipeline.proc import cpu_seconds, rss_kib
from benchmarks.pipeline.run import Context
from marginwatch.base import keys


@dataclass
class NaiveRun:
    """What the naive baseline did: counters over time, memory, CPU."""

    samples: list[Sample] = field(default_factory=list)
    warm_up_seconds: float = 0.0
    seconds: float = 0.0
    ticks: int = 0
    demanded: int = 0

    def rate(self, counter: str) -> float:
        """Per second, from the end of the warm-up to the last sample."""
        base = next(s for s in self.samples if s.at - self.samples[0].at >= self.warm_up_seconds)
        last = self.samples[-1]
        seconds = last.at - base.at
        return (last.counters[counter] - base.counters[counter]) / seconds if seconds else 0.0

    def total(self, counter: str) -> int:
        return self.samples[-1].counters[counter] if self.samples else 0


def write_holders(book: Book, path: Path) -> None:
    import json  # noqa: PLC0415 (only the baseline needs it)

    path.write_text(json.dumps(book.holders), encoding="utf-8")


def run_naive(ctx: Context, book: Book) -> NaiveRun:
    """Two solo naive workers, the naive dispatcher and the producer for ``--naive-seconds``."""
    client, daemons, seconds = ctx.client, ctx.daemons, ctx.args.naive_seconds
    holders = daemons.logs / "holders.json"
    write_holders(book, holders)
    client.delete(*naive.COUNTERS, naive.QUEUE)
    for number in range(WORKERS):
        daemons.start(
            f"naive-{number}",
            [
                sys.executable,
                str(NAIVE_SCRIPT),
                "worker",
                "--name",
                f"naive-{number}",
                "--prefetch",
                str(ctx.args.naive_prefetch),
            ],
        )
    warm_up_naive(ctx, next(iter(book.holders.values())))
    dispatch = [
        sys.executable,
        str(NAIVE_SCRIPT),
        "dispatch",
        "--holders",
        str(holders),
        "--seconds",
        f"{seconds + 30:g}",
        "--max-backlog",
        str(ctx.args.naive_max_backlog),
    ]
    daemons.start("naive-dispatcher", dispatch)
    time.sleep(3.0)  # the dispatcher's imports and index, before the first tick it must see
    pids = {**daemons.pids("naive"), **ctx.engines.pids}
    last_tick_id = newest_tick_id(client)
    producer = daemons.start(
        "producer-naive", producer_command(ctx.symbols, seconds, ctx.args.seed, [])
    )
    run = NaiveRun(warm_up_seconds=min(5.0, seconds / 4))
    started = time.time()
    run.samples = sample_while(
        lambda: producer.poll() is None, lambda: naive_sample(ctx, pids), daemons
    )
    run.seconds = time.time() - started
    daemons.stop("naive-dispatcher", "naive-0", "naive-1")
    run.ticks, run.demanded = tick_demand(client, last_tick_id, book.holders)
    return run


def newest_tick_id(client: redis.Redis) -> str:
    newest: list[Any] = client.xrevrange(keys.TICKS, count=1)  # type: ignore[assignment]
    return newest[0][0].decode() if newest else "0"


def tick_demand(
    client: redis.Redis, after_id: str, holders: Mapping[str, list[str]]
) -> tuple[int, int]:
    """Ticks on the stream after ``after_id``, and the tasks they call for (one per holder)."""
    entries: list[Any] = client.xrange(keys.TICKS, min=f"({after_id}")  # type: ignore[assignment]
    symbols = [fields[b"s"].decode() for _id, fields in entries]
    return len(symbols), sum(len(holders.get(symbol, ())) for symbol in symbols)


def naive_sample(ctx: Context, pids: Mapping[str, int]) -> Sample:
    """The naive queue's length (as ``partition_queued``), the counters, memory."""
    pipe = ctx.client.pipeline(transaction=False)
    pipe.get(keys.TICK_SEQUENCE)
    pipe.llen(naive.QUEUE)
    pipe.hlen("unacked")
    pipe.info("memory")
    pipe.mget(list(naive.COUNTERS))
    sequence, queued, unacked, memory, counters = pipe.execute()
    return Sample(
        at=time.time(),
        tick_sequence=int(sequence or 0),
        evaluated=(),
        partition_queued=int(queued),
        actions_queued=0,
        unacked=int(unacked),
        pending_flags=0,
        redis_used=int(memory["used_memory"]),
        rss_kib={name: rss_kib(pid) for name, pid in pids.items()},
        cpu_seconds={name: cpu_seconds(pid) for name, pid in pids.items()},
        counters={n: int(v or 0) for n, v in zip(naive.COUNTERS, counters, strict=True)},
    )


def warm_up_naive(ctx: Context, account_ids: list[str]) -> None:
    """Send a few tasks and wait until both workers have run some (imports, first reads)."""
    naive.send(naive.make_app(ctx.engines.state_url), account_ids[:20])
    wait_until(
        lambda: int(ctx.client.get(naive.DONE) or 0) >= 20,
        120,
        "the naive workers' first tasks",
        ctx.daemons,
    )
    ctx.client.delete(*naive.COUNTERS)
