"""``marginwatch demo``: the whole system on one machine, with a live terminal view.

Starts its own ``redis-server`` when ``MARGINWATCH_REDIS_URL`` is unset, loads a generated book,
then runs the executor, two partition workers and the producer (a synthetic market with a 12%
BTCUSDT crash over 30 s) as child processes, and redraws ``marginwatch status`` every second.
Each child serves its Prometheus metrics on its own port, ``--metrics-port-base`` and the next
three (default 9101-9104; 0: none). Ctrl-C (or ``--duration``) stops every child and the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from decimal import Decimal
from pathlib import Path
from typing import TextIO

import redis

from marginwatch.base.exits import EXIT_OK
from marginwatch.base.settings import Settings, redis_url
from marginwatch.cli.book_generator import generate_accounts
from marginwatch.cli.embedded_redis import start_redis_server
from marginwatch.cli.status import overview
from marginwatch.producer.synthetic import MAJOR_START_PRICES
from marginwatch.state.accounts import store_accounts

DEMO_PARTITIONS = 8
DEMO_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT")
DEMO_MARKS = {symbol: Decimal(str(MAJOR_START_PRICES[symbol])) for symbol in DEMO_SYMBOLS}
CRASH = "BTCUSDT:-12%:30s@20s"
CLEAR_SCREEN = "\x1b[2J\x1b[H"


@contextmanager
def demo_redis(settings: Settings, out: TextIO) -> Iterator[str]:
    """The configured Redis, or a private server for the demo's lifetime."""
    if settings.redis_url:
        yield redis_url(settings)
        return
    server = start_redis_server()
    out.write(f"started a private redis-server at {server.url}\n")
    try:
        yield server.url
    finally:
        server.stop()


def children() -> list[list[str]]:
    """The commands of every daemon the demo runs."""
    me = [sys.executable, "-m", "marginwatch"]
    return [
        [*me, "executor", "--loglevel", "WARNING"],
        [*me, "worker", "--partitions", "0-3", "--loglevel", "WARNING"],
        [*me, "worker", "--partitions", "4-7", "--loglevel", "WARNING"],
        [*me, "producer", "--source", "synthetic", "--symbols", ",".join(DEMO_SYMBOLS),
         "--scenario", CRASH],
    ]  # fmt: skip


def run_demo(
    settings: Settings,
    accounts: int,
    duration: float | None,
    out: TextIO,
    metrics_port_base: int,
) -> int:
    """Run until Ctrl-C or ``duration`` seconds; returns 0."""
    with demo_redis(settings, out) as url:
        client = redis.Redis.from_url(url)
        stored = store_accounts(client, generate_accounts(accounts, DEMO_MARKS, seed=1),
                                DEMO_PARTITIONS)  # fmt: skip
        out.write(f"loaded {stored} accounts; starting executor, 2 workers, producer\n")
        env = {**os.environ, "MARGINWATCH_REDIS_URL": url,
               "MARGINWATCH_PARTITIONS": str(DEMO_PARTITIONS)}  # fmt: skip
        logs = Path(tempfile.mkdtemp(prefix="marginwatch-demo-"))
        ports = metrics_ports(metrics_port_base, len(children()))
        header = f"daemon logs in {logs}\n" + metrics_lines(children(), ports)
        out.write(header)
        processes = _start_children(env, ports, logs)
        try:
            _watch(client, out, duration, header)
        except KeyboardInterrupt:
            out.write("\nstopping\n")
        finally:
            _stop(processes)
    return EXIT_OK


def metrics_ports(base: int, count: int) -> list[int]:
    """The metrics port of each child: ``base``, ``base + 1``, ... (all 0, disabled, if 0)."""
    return [base + n if base else 0 for n in range(count)]


def metrics_lines(commands: list[list[str]], ports: list[int]) -> str:
    """Where each child serves its metrics, one line each (nothing when disabled)."""
    return "".join(
        f"metrics of {_child_name(command)}: http://127.0.0.1:{port}/metrics\n"
        for command, port in zip(commands, ports, strict=True)
        if port
    )


def _child_name(command: list[str]) -> str:
    """``executor``, ``worker 0-3``, ``producer``."""
    return f"worker {command[5]}" if command[3] == "worker" else command[3]


def _start_children(
    env: dict[str, str], ports: list[int], logs: Path
) -> list[subprocess.Popen[bytes]]:
    """Start every child with its own metrics port, each logging to a file in ``logs``."""
    return [
        _spawn(
            command, {**env, "MARGINWATCH_METRICS_PORT": str(port)}, logs / f"{command[3]}-{n}.log"
        )
        for n, (command, port) in enumerate(zip(children(), ports, strict=True))
    ]


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)


def _watch(client: redis.Redis, out: TextIO, duration: float | None, header: str) -> None:
    deadline = None if duration is None else time.monotonic() + duration
    while deadline is None or time.monotonic() < deadline:
        out.write(CLEAR_SCREEN + f"marginwatch demo ({CRASH} crash scenario), Ctrl-C stops\n")
        out.write(header + "\n")
        out.write(overview(client, DEMO_PARTITIONS))
        out.flush()
        time.sleep(1.0)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
