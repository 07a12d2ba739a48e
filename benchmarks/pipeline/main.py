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

from benchmarks.pipeline.args import parse_args
from benchmarks.pipeline.book import load_book, pick_symbols, publish_marks, start_marks
from benchmarks.pipeline.config import BRACKETS, log
from benchmarks.pipeline.daemons import Daemons
from benchmarks.pipeline.engines import KINDS, Engines, broker_client, start_engines
from benchmarks.pipeline.figures import Result, print_comparison, print_figures
from benchmarks.pipeline.naive import run_naive
from benchmarks.pipeline.observe import Probe
from benchmarks.pipeline.run import Context, empty_worker_rss_kib, run_pipeline
from benchmarks.symbols import venue_tables, write_brackets_file
from marginwatch.base.settings import Settings
from marginwatch.runtime.celery_app import make_celery
from marginwatch.state.connection import open_redis


def raise_interrupt(_number: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def daemon_env(args: argparse.Namespace, engines: Engines, brackets: Path) -> dict[str, str]:
    """What every daemon of a run starts with: its servers, the partition count and the bracket
    tables of its symbols."""
    return {
        **os.environ,
        "MARGINWATCH_REDIS_URL": engines.state_url,
        "MARGINWATCH_BROKER_URL": engines.broker_url,
        "MARGINWATCH_PARTITIONS": str(args.partitions),
        "MARGINWATCH_BRACKETS_FILE": str(brackets),
    }


def benchmark(args: argparse.Namespace, stack: ExitStack, kind: str) -> Result:
    """One run of the pipeline (and, on a single Redis, the naive baseline) on ``kind``'s
    servers; its figures printed."""
    engines = start_engines(kind)
    stack.callback(engines.stop)
    logs = Path(tempfile.mkdtemp(prefix=f"marginwatch-bench-{kind}-"))
    tables = venue_tables(args.symbols)
    daemons = Daemons(logs, daemon_env(args, engines, write_brackets_file(tables, logs / BRACKETS)))
    stack.callback(daemons.stop_all)
    client = open_redis(engines.state_url)
    app = make_celery(Settings(redis_url=engines.state_url, partitions=args.partitions),
                      engines.broker_url)  # fmt: skip
    stack.callback(app.close)
    probe = Probe(client, app, engines.primaries, args.partitions, broker_client(engines))
    ctx = Context(args, engines, client, daemons, pick_symbols(args.symbols, tables), probe)
    marks = start_marks(ctx.symbols, args.seed)
    publish_marks(client, marks)
    log(f"{engines.title}; logs in {logs}; measuring an empty worker")
    empty_worker_kib = empty_worker_rss_kib(ctx)
    log(f"generating and storing {args.accounts:,} accounts")
    book = load_book(client, args, marks, engines.primaries)
    book.empty_worker_kib = empty_worker_kib
    log(f"stored {book.accounts:,} accounts ({book.positions:,} positions); starting daemons")
    run = run_pipeline(ctx, book)
    log(f"pipeline done: {len(run.latencies_ms):,} margin calls")
    naive_run = run_naive(ctx, book) if args.naive_seconds > 0 and kind == "single" else None
    print(f"\n##### engines: {engines.title}")
    print_figures(ctx, book, run, naive_run)
    return Result(engines.title, book, run)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    kinds = KINDS if args.engines == "both" else (args.engines,)
    try:
        results = []
        for kind in kinds:
            with ExitStack() as stack:
                results.append(benchmark(args, stack, kind))
        if len(results) > 1:
            print_comparison(results)
    except KeyboardInterrupt:
        log("interrupted; stopping every child process and the servers")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
