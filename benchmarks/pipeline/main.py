"""The pipeline benchmark: main."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

import redis

from benchmarks.pipeline.args import parse_args
from benchmarks.pipeline.book import load_book, pick_symbols, publish_marks, start_marks
from benchmarks.pipeline.config import log
from benchmarks.pipeline.daemons import Daemons
from benchmarks.pipeline.figures import print_figures
from benchmarks.pipeline.naive import run_naive
from benchmarks.pipeline.run import Context, run_pipeline
from marginwatch.cli.embedded_redis import start_redis_server


def raise_interrupt(_number: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def benchmark(args: argparse.Namespace, stack: ExitStack) -> None:
    server = start_redis_server()
    stack.callback(server.stop)
    logs = Path(tempfile.mkdtemp(prefix="marginwatch-bench-"))
    env = {
        **os.environ,
        "MARGINWATCH_REDIS_URL": server.url,
        "MARGINWATCH_PARTITIONS": str(args.partitions),
    }
    daemons = Daemons(logs, env)
    stack.callback(daemons.stop_all)
    client = redis.Redis.from_url(server.url)
    ctx = Context(args, server, client, daemons, pick_symbols(args.symbols))
    marks = start_marks(ctx.symbols, args.seed)
    publish_marks(client, marks)
    log(f"redis-server at {server.url}; logs in {logs}; generating {args.accounts:,} accounts")
    book = load_book(client, args, marks)
    log(f"stored {book.accounts:,} accounts ({book.positions:,} positions); starting daemons")
    run = run_pipeline(ctx, book)
    log(f"pipeline done: {len(run.latencies_ms):,} margin calls; naive baseline next")
    naive_run = run_naive(ctx, book) if args.naive_seconds > 0 else None
    print_figures(ctx, book, run, naive_run)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    with ExitStack() as stack:
        try:
            benchmark(args, stack)
        except KeyboardInterrupt:
            log("interrupted; stopping every child process and the server")
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
