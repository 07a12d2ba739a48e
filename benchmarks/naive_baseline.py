"""Naive baseline for the pipeline benchmark: one Celery task per account per tick.

    python benchmarks/naive_baseline.py worker --name naive-0
    python benchmarks/naive_baseline.py dispatch --holders holders.json --seconds 30

``worker`` runs a solo Celery worker (the pipeline's Celery configuration: JSON, late acks,
prefetch 1) with one task, ``naive.evaluate_account(account_id)``: read the account from Redis,
read every mark (``HGETALL`` of the prices hash), evaluate the account with the exact path.
``dispatch`` reads the tick stream and, for every tick, enqueues one task per account holding
the tick's symbol (``--holders``: a JSON object symbol -> account ids, precomputed). It skips a
tick's tasks while the queue holds more than ``--max-backlog`` (so Redis memory stays bounded)
and counts them as dropped. Both need ``MARGINWATCH_REDIS_URL``. Counters (Redis strings, see
``COUNTERS``) say how many ticks the dispatcher read and how many tasks it enqueued, dropped
and saw done; ``python -m benchmarks.pipeline`` reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from celery import Celery

from marginwatch.base import keys
from marginwatch.base.settings import Settings, bracket_tables
from marginwatch.base.ticks import ticks_from_prices_hash
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.exact import evaluate_account
from marginwatch.runtime.celery_app import make_celery
from marginwatch.state.accounts import read_account

TASK = "naive.evaluate_account"
QUEUE = "naive.accounts"
DONE = "naive:done"
POSITIONS = "naive:positions"
TICKS_READ = "naive:ticks-read"
ENQUEUED = "naive:enqueued"
DROPPED = "naive:dropped"
COUNTERS = (TICKS_READ, ENQUEUED, DROPPED, DONE, POSITIONS)
DEFAULT_MAX_BACKLOG = 50_000
READ_BLOCK_MS = 500


def redis_url() -> str:
    url = Settings().redis_url
    if not url:
        raise SystemExit("naive_baseline: MARGINWATCH_REDIS_URL is not set")
    return url


def evaluate_one(
    client: redis.Redis, tables: Mapping[str, BracketTable], settings: Settings, account_id: str
) -> int:
    """Read the account and the marks, evaluate exactly; returns the positions evaluated."""
    stored = read_account(client, account_id, settings.partitions)
    if stored is None:
        return 0
    ticks = ticks_from_prices_hash(client.hgetall(keys.PRICES))
    marks = {symbol: tick.mark_price for symbol, tick in ticks.items()}
    if any(position.symbol not in marks for position in stored.account.positions):
        return 0
    evaluate_account(stored.account, marks, tables, settings.thresholds, settings.venue)
    return len(stored.account.positions)


def make_app(url: str, prefetch: int = 1) -> Celery:
    """The pipeline's Celery configuration (``prefetch`` aside) with the naive task."""
    settings = Settings(redis_url=url)
    app = make_celery(settings, url)
    app.conf.worker_prefetch_multiplier = prefetch
    client = redis.Redis.from_url(url)
    tables = bracket_tables(settings)

    @app.task(name=TASK)  # type: ignore[untyped-decorator]
    def naive_evaluate_account(account_id: str) -> None:
        positions = evaluate_one(client, tables, settings, account_id)
        pipe = client.pipeline(transaction=False)
        pipe.incr(DONE)
        pipe.incrby(POSITIONS, positions)
        pipe.execute()

    return app


def send(app: Celery, account_ids: Sequence[str]) -> None:
    """Enqueue one task per account id (one producer for the whole batch)."""
    with app.producer_or_acquire() as producer:
        for account_id in account_ids:
            app.send_task(TASK, args=[account_id], queue=QUEUE, producer=producer)


def run_worker(name: str, prefetch: int) -> None:
    """A solo worker on the naive queue until SIGTERM."""
    make_app(redis_url(), prefetch).worker_main(
        ["worker", "--pool=solo", "--concurrency=1", "--loglevel=WARNING", "-Q", QUEUE,
         "-n", f"{name}@{socket.gethostname()}",
         "--without-gossip", "--without-mingle", "--without-heartbeat"]
    )  # fmt: skip


def load_holders(path: Path) -> dict[str, list[str]]:
    holders: dict[str, list[str]] = json.loads(path.read_text(encoding="utf-8"))
    return holders


class Dispatcher:
    """Tick stream in, one task per holding account out."""

    def __init__(self, url: str, holders: Mapping[str, list[str]], max_backlog: int) -> None:
        self.client = redis.Redis.from_url(url)
        self.app = make_app(url)
        self.holders = holders
        self.max_backlog = max_backlog
        self.last_id = "$"
        self.stopping = False

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            reply: list[Any] = self.client.xread(  # type: ignore[assignment]
                {keys.TICKS: self.last_id}, block=READ_BLOCK_MS, count=1_000
            )
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    self.last_id = entry_id.decode()
                    self.dispatch(fields[b"s"].decode())

    def dispatch(self, symbol: str) -> None:
        account_ids = self.holders.get(symbol, [])
        backlog = int(self.client.llen(QUEUE))
        if backlog > self.max_backlog:
            self.count(len(account_ids), 0)
            return
        send(self.app, account_ids)
        self.count(len(account_ids), len(account_ids))

    def count(self, demanded: int, enqueued: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.incr(TICKS_READ)
        pipe.incrby(ENQUEUED, enqueued)
        pipe.incrby(DROPPED, demanded - enqueued)
        pipe.execute()

    def stop(self, _number: int, _frame: FrameType | None) -> None:
        self.stopping = True


def run_dispatcher(holders_path: Path, seconds: float, max_backlog: int) -> None:
    dispatcher = Dispatcher(redis_url(), load_holders(holders_path), max_backlog)
    signal.signal(signal.SIGTERM, dispatcher.stop)
    signal.signal(signal.SIGINT, dispatcher.stop)
    dispatcher.run(seconds)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="a solo worker on the naive queue")
    worker.add_argument("--name", default=f"naive-{os.getpid()}")
    worker.add_argument("--prefetch", type=int, default=1, help="the pipeline's setting: 1")
    dispatch = commands.add_parser("dispatch", help="one task per account per tick")
    dispatch.add_argument("--holders", type=Path, required=True, help="JSON symbol -> ids")
    dispatch.add_argument("--seconds", type=float, required=True)
    dispatch.add_argument("--max-backlog", type=int, default=DEFAULT_MAX_BACKLOG)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "worker":
        run_worker(args.name, args.prefetch)
    else:
        run_dispatcher(args.holders, args.seconds, args.max_backlog)
    return 0


if __name__ == "__main__":
    sys.exit(main())
