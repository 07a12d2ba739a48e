"""Pipeline benchmark: the real marginwatch pipeline at Binance's mark-price cadence.

    python benchmarks/bench_pipeline.py            # 200,000 accounts, 200 symbols, 120 s
    python benchmarks/bench_pipeline.py --accounts 20000 --seconds 20 --naive-seconds 10

Starts a private redis-server, publishes one round of the synthetic market's start prices,
generates a book near those marks (topped up to about 3 positions per account) and stores it in
``--partitions`` partitions. Then runs the executor, two partition workers (half the partitions
each) and the synthetic producer (every symbol ticking once per second at its own moment in the
second; staggered crashes so margin calls keep arriving) as ``python -m marginwatch``
subprocesses, and samples the backlog every second. Positions evaluated are counted from the
workers' ``/metrics`` when they serve it, else from Redis keyspace notifications on each
partition's ``evaluated`` key (every finished evaluation writes it once) times the partition's
positions. Afterwards it runs the naive baseline (``naive_baseline.py``: one Celery task per
account per tick) on the same book and Redis, and prints a figures block.

Daemon logs, ``timeline.csv`` (per second: evaluation lag, queues, margin calls and their
latency) and, with ``--py-spy``, raw py-spy stacks of every worker and executor stay in a
temporary directory (printed). ``--executors`` and ``--partitions`` are deployment knobs.
Ctrl-C or SIGTERM stops every child process and the server.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any

import naive_baseline as naive
import numpy as np
import redis

from marginwatch.base import keys
from marginwatch.base.ticks import Tick
from marginwatch.cli.book_generator import generate_accounts
from marginwatch.cli.embedded_redis import RedisServer, free_port, start_redis_server
from marginwatch.engine.brackets import default_tables
from marginwatch.engine.types import Account, PositionMode
from marginwatch.producer.publisher import Publisher
from marginwatch.producer.run import synthetic_symbols
from marginwatch.producer.synthetic import MarketSpec, start_prices, to_significant_digits
from marginwatch.runtime import celery_app
from marginwatch.runtime.celery_app import WEBHOOKS_QUEUE, partition_queue
from marginwatch.state.accounts import partition_of, store_accounts

WORKERS = 2
GOAL_P99_MS = 250.0
FIRST_EVALUATION_TIMEOUT_S = 900.0
DRAIN_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
POSITIONS_METRIC = "marginwatch_positions_evaluated_total"
EVALUATIONS_METRIC = "marginwatch_evaluations_total"
DURATION_METRIC = "marginwatch_evaluation_duration_seconds"
TICK_AGE_METRIC = "marginwatch_tick_age_seconds"
HISTOGRAMS = (DURATION_METRIC, TICK_AGE_METRIC)
SCRAPED = (
    POSITIONS_METRIC,
    EVALUATIONS_METRIC,
    *(f"{name}_{part}" for name in (DURATION_METRIC, TICK_AGE_METRIC) for part in ("sum", "count")),
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The executor's queues but webhooks: ACTIONS_QUEUE and any other the Celery app names.
ACTION_QUEUES = sorted(
    value
    for name, value in vars(celery_app).items()
    if name.endswith("_QUEUE") and not name.startswith("_") and value != WEBHOOKS_QUEUE
)
NAIVE_SCRIPT = Path(__file__).with_name("naive_baseline.py")


# ---------------------------------------------------------------------------------------------
# Arguments


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=200_000)
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=120.0, help="producer run time")
    parser.add_argument("--partitions", type=int, default=8, help="P, split over 2 workers")
    parser.add_argument("--seed", type=int, default=1, help="market and book seed")
    parser.add_argument(
        "--positions-per-account", type=float, default=3.0, help="top-up target (0: none)"
    )
    parser.add_argument(
        "--executors", type=int, default=1, help="executor processes (deployment knob)"
    )
    parser.add_argument("--crash-move", type=float, default=-12.0, help="percent")
    parser.add_argument("--crash-seconds", type=float, default=30.0, help="each crash's length")
    parser.add_argument("--crash-every", type=float, default=10.0, help="seconds between starts")
    parser.add_argument("--crash-first", type=float, default=5.0, help="first crash start (s)")
    parser.add_argument(
        "--py-spy", action="store_true", help="profile the daemons over the run (logs dir)"
    )
    parser.add_argument("--naive-seconds", type=float, default=30.0, help="0: skip baseline")
    parser.add_argument("--naive-max-backlog", type=int, default=naive.DEFAULT_MAX_BACKLOG)
    parser.add_argument(
        "--naive-prefetch", type=int, default=1, help="naive workers' prefetch (pipeline's: 1)"
    )
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# /proc: memory, CPU time, other processes


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 when it is gone)."""
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (0 when it is gone)."""
    with suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (``/proc/stat``: all but idle and iowait)."""
    line = Path("/proc/stat").read_text().splitlines()[0]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, line.split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def all_cpu_seconds() -> dict[int, tuple[str, float]]:
    """Every process's command line (shortened) and CPU time."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                name = command.strip()[:70] or f"[{(entry / 'comm').read_text().strip()}]"
                found[int(entry.name)] = (name, cpu_seconds(int(entry.name)))
    return found


def other_processes(
    before: Mapping[int, tuple[str, float]], ours: set[int], seconds: float, shown: int = 5
) -> list[str]:
    """The busiest processes that are not ours, over the window: ``"name: x% of a core"``."""
    after = all_cpu_seconds()
    used = [
        (after[pid][1] - before[pid][1], after[pid][0])
        for pid in after.keys() & before.keys()
        if pid not in ours
    ]
    busiest = sorted(used, reverse=True)[:shown]
    return [f"{name}: {100 * cpu / seconds:.0f}%" for cpu, name in busiest if cpu >= 0.01 * seconds]


# ---------------------------------------------------------------------------------------------
# The market and the book


def pick_symbols(count: int) -> tuple[str, ...]:
    """The symbols the producer would pick for ``--symbols count`` (majors first)."""
    return synthetic_symbols(count, set(default_tables()), ())


def start_marks(symbols: Sequence[str], seed: int) -> dict[str, Decimal]:
    """The synthetic market's start prices, drawn exactly as the producer draws them."""
    prices = start_prices(symbols, np.random.default_rng(seed))
    digits = MarketSpec(tuple(symbols)).significant_digits
    return {
        s: to_significant_digits(float(p), digits) for s, p in zip(symbols, prices, strict=True)
    }


def publish_marks(client: redis.Redis, marks: Mapping[str, Decimal]) -> None:
    """One round of ticks at the start prices, one second old (the producer's are newer)."""
    event_time = time.time_ns() // 1_000_000 - 1_000
    Publisher(client).publish([Tick(s, price, event_time) for s, price in marks.items()])


@dataclass
class TopUp:
    """Generated accounts, topped up to ``target`` positions per account on average.

    An account whose running total falls short of the target gets the positions (on symbols it
    does not hold) and the cross wallet of a second generated account of the same mode.
    """

    target: float
    generated_positions: int = 0
    merged_accounts: int = 0
    positions: int = 0

    def accounts(self, count: int, marks: Mapping[str, Decimal], seed: int) -> Iterator[Account]:
        donors = generate_accounts(sys.maxsize, marks, seed + 1, prefix="donor")
        for number, generated in enumerate(generate_accounts(count, marks, seed)):
            self.generated_positions += len(generated.positions)
            account = generated
            if self.positions + len(generated.positions) < self.target * (number + 1):
                account = merged(generated, next_donor(donors, generated.position_mode))
                self.merged_accounts += 1
            self.positions += len(account.positions)
            yield account


def next_donor(donors: Iterator[Account], mode: PositionMode) -> Account:
    return next(donor for donor in donors if donor.position_mode is mode)


def merged(account: Account, donor: Account) -> Account:
    held = {position.symbol for position in account.positions}
    extra = tuple(position for position in donor.positions if position.symbol not in held)
    wallet = account.cross_wallet_balance + donor.cross_wallet_balance
    return Account(account.account_id, wallet, account.positions + extra, account.position_mode)


@dataclass
class Book:
    """What was loaded, where it went, and how long it took."""

    accounts: int
    positions: int
    generated_positions: int
    merged_accounts: int
    partition_accounts: list[int]
    partition_positions: list[int]
    holders: dict[str, list[str]]
    generate_seconds: float
    store_seconds: float
    redis_used_bytes: int


def load_book(client: redis.Redis, args: argparse.Namespace, marks: Mapping[str, Decimal]) -> Book:
    """Generate the book (timed), then store it (timed)."""
    started = time.perf_counter()
    top_up = TopUp(args.positions_per_account)
    accounts = list(top_up.accounts(args.accounts, marks, args.seed))
    generated = time.perf_counter()
    store_accounts(client, accounts, args.partitions)
    stored = time.perf_counter()
    book = Book(
        len(accounts),
        top_up.positions,
        top_up.generated_positions,
        top_up.merged_accounts,
        [0] * args.partitions,
        [0] * args.partitions,
        {},
        generated - started,
        stored - generated,
        used_memory(client),
    )
    for account in accounts:
        partition = partition_of(account.account_id, args.partitions)
        book.partition_accounts[partition] += 1
        book.partition_positions[partition] += len(account.positions)
        for symbol in {position.symbol for position in account.positions}:
            book.holders.setdefault(symbol, []).append(account.account_id)
    return book


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


# ---------------------------------------------------------------------------------------------
# Daemons


class Daemons:
    """Child processes with their logs; ``stop_all`` ends every one still running."""

    def __init__(self, logs: Path, env: Mapping[str, str]) -> None:
        self.logs = logs
        self.env = dict(env)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: Sequence[str], **env: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                command, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes[name] = process
        return process

    def pids(self, prefix: str = "") -> dict[str, int]:
        return {n: p.pid for n, p in self.processes.items() if n.startswith(prefix)}

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None and not name.startswith(("producer", "py-spy")):
                raise RuntimeError(f"{name} exited ({process.returncode}); see {self.logs}")

    def stop(self, *names: str) -> None:
        chosen = [self.processes.pop(name) for name in names if name in self.processes]
        for process in chosen:
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in chosen:
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        self.stop(*self.processes)


def marginwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "marginwatch", *args]


def worker_specs(partitions: int) -> list[str]:
    """``--partitions`` of each worker: contiguous halves."""
    bounds = np.linspace(0, partitions, WORKERS + 1).round().astype(int)
    return [f"{bounds[w]}-{bounds[w + 1] - 1}" for w in range(WORKERS)]


def crash_scenarios(symbols: Sequence[str], args: argparse.Namespace) -> list[str]:
    """Crashes starting every ``--crash-every`` s, on symbols spread over the list."""
    last = max(args.crash_first + 1, args.seconds - 5)
    starts = np.arange(args.crash_first, last, args.crash_every)
    stride = max(1, len(symbols) // max(1, len(starts)))
    return [
        f"{symbols[(k * stride) % len(symbols)]}:{args.crash_move:g}%:{args.crash_seconds:g}s"
        f"@{start:g}s"
        for k, start in enumerate(starts)
    ]


def producer_command(
    symbols: Sequence[str], seconds: float, seed: int, scenarios: list[str]
) -> list[str]:
    command = marginwatch(
        "producer",
        "--source",
        "synthetic",
        "--symbols",
        ",".join(symbols),
        "--rate",
        "1",
        "--seed",
        str(seed),
        "--duration",
        f"{seconds:g}",
    )
    for scenario in scenarios:
        command += ["--scenario", scenario]
    return command


def published_ticks(log: Path) -> tuple[int, str]:
    """The producer's own count of published ticks and its rejects, from its summary line."""
    found = re.findall(r"published (\d+) ticks; rejects: (.*)", log.read_text(errors="replace"))
    return (int(found[-1][0]), found[-1][1]) if found else (0, "no summary line")


def wait_until(condition: Callable[[], bool], timeout: float, what: str, daemons: Daemons) -> float:
    """Poll until ``condition``; returns the seconds waited."""
    started = time.monotonic()
    while not condition():
        daemons.check_alive()
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# Observation


class EvaluationCounter:
    """Times of every write of each partition's ``evaluated`` key (keyspace notifications)."""

    def __init__(self, url: str, partitions: int) -> None:
        self.client = redis.Redis.from_url(url)  # kept: its pool holds the pubsub connection
        self.client.config_set("notify-keyspace-events", "K$")
        self.channels = {
            f"__keyspace@0__:{keys.partition_evaluated(p)}".encode(): p for p in range(partitions)
        }
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self.pubsub.subscribe(*self.channels)
        self.times: list[list[float]] = [[] for _ in range(partitions)]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.stopping.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message is not None and message["channel"] in self.channels:
                self.times[self.channels[message["channel"]]].append(time.time())

    def counts(self, since: float, until: float) -> list[int]:
        return [sum(since <= t <= until for t in times) for times in self.times]

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=2)
        self.pubsub.close()


def scrape(port: int, names: Sequence[str]) -> dict[str, float] | None:
    """Sums of the named counters on ``http://127.0.0.1:port/metrics``; None when not served."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    sums = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        le = re.search(r'le="([^"]+)"', line)
        if name.endswith("_bucket") and name[: -len("_bucket")] in HISTOGRAMS and le:
            name = f"{name}:{le.group(1)}"
            sums.setdefault(name, 0.0)
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums if any(f"{n}{{" in text or f"{n} " in text for n in names) else None


def scrape_all(ports: Sequence[int]) -> dict[str, float] | None:
    """The ``SCRAPED`` sums over every worker; None unless every one serves them."""
    found = [scrape(port, SCRAPED) for port in ports]
    if any(sums is None for sums in found):
        return None
    names = {name for sums in found if sums for name in sums}
    return {name: sum(s.get(name, 0.0) for s in found if s) for name in names}


def metric_quantile(
    before: Mapping[str, float], after: Mapping[str, float], name: str, q: float
) -> float:
    """The upper bound of the histogram bucket holding quantile ``q`` between two scrapes."""
    prefix = f"{name}_bucket:"
    bounds = sorted((float(k[len(prefix) :]), k) for k in after if k.startswith(prefix))
    total = after[f"{name}_count"] - before[f"{name}_count"]
    for bound, key in bounds:
        if total and after[key] - before.get(key, 0.0) >= q * total:
            return bound
    return float("nan")


def metric_mean(before: Mapping[str, float], after: Mapping[str, float], name: str) -> float:
    """Mean of a histogram's observations between two scrapes (nan if none)."""
    count = after[f"{name}_count"] - before[f"{name}_count"]
    return (after[f"{name}_sum"] - before[f"{name}_sum"]) / count if count else float("nan")


@dataclass(frozen=True)
class Sample:
    """One second's look at Redis and the daemons."""

    at: float
    tick_sequence: int
    evaluated: tuple[int, ...]
    partition_queued: int
    actions_queued: int
    webhooks_queued: int
    unacked: int
    pending_flags: int
    redis_used: int
    rss_kib: dict[str, int]
    cpu_seconds: dict[str, float]
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def max_lag(self) -> int:
        return self.tick_sequence - min(self.evaluated) if self.evaluated else 0


def take_sample(client: redis.Redis, partitions: int, pids: Mapping[str, int]) -> Sample:
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.TICK_SEQUENCE)
    pipe.mget([keys.partition_evaluated(p) for p in range(partitions)])
    pipe.mget([keys.partition_pending(p) for p in range(partitions)])
    queues = [*(partition_queue(p) for p in range(partitions)), *ACTION_QUEUES, WEBHOOKS_QUEUE]
    for name in queues:
        pipe.llen(name)
    pipe.hlen("unacked")
    pipe.info("memory")
    reply = pipe.execute()
    lengths = reply[3 : 3 + len(queues)]
    return Sample(
        at=time.time(),
        tick_sequence=int(reply[0] or 0),
        evaluated=tuple(int(v or 0) for v in reply[1]),
        partition_queued=sum(lengths[:partitions]),
        actions_queued=sum(lengths[partitions:-1]),
        webhooks_queued=lengths[-1],
        unacked=int(reply[-2]),
        pending_flags=sum(v is not None for v in reply[2]),
        redis_used=int(reply[-1]["used_memory"]),
        rss_kib={name: rss_kib(pid) for name, pid in pids.items()},
        cpu_seconds={name: cpu_seconds(pid) for name, pid in pids.items()},
    )


def cpu_shares(samples: Sequence[Sample]) -> dict[str, float]:
    """Each process's CPU time per second of wall time, over the samples it was alive in."""
    shares = {}
    for name in samples[-1].cpu_seconds if samples else ():
        alive = [s for s in samples if s.cpu_seconds.get(name, 0.0) > 0]
        if len(alive) > 1:
            used = alive[-1].cpu_seconds[name] - alive[0].cpu_seconds[name]
            shares[name] = used / (alive[-1].at - alive[0].at)
    return shares


def sample_while(
    running: Callable[[], bool], take: Callable[[], Sample], daemons: Daemons
) -> list[Sample]:
    """One sample a second while ``running()``."""
    samples = []
    next_at = time.monotonic()
    while running():
        daemons.check_alive()
        samples.append(take())
        next_at += 1.0
        time.sleep(max(0.0, next_at - time.monotonic()))
    return samples


@dataclass(frozen=True)
class Trend:
    """A series over the run: means of its first and last thirds, slope, the verdict."""

    first: float
    last: float
    peak: float
    slope_per_minute: float
    growing: bool


def trend(times: Sequence[float], values: Sequence[float], floor: float) -> Trend:
    """Growing: the last third's mean exceeds the first's by more than ``floor`` and by half."""
    third = max(1, len(values) // 3)
    first, last = float(np.mean(values[:third])), float(np.mean(values[-third:]))
    slope = float(np.polyfit(times, values, 1)[0]) * 60 if len(values) > 1 else 0.0
    growing = last > first + floor and last > 1.5 * first
    return Trend(first, last, float(max(values)), slope, growing)


# ---------------------------------------------------------------------------------------------
# The pipeline run


@dataclass
class PipelineRun:
    """Everything measured while the real pipeline ran."""

    ready_seconds: float = 0.0
    window: tuple[float, float] = (0.0, 0.0)
    published: int = 0
    rejects: str = ""
    sequence_delta: int = 0
    samples: list[Sample] = field(default_factory=list)
    evaluations: list[int] = field(default_factory=list)
    method: str = ""
    positions_evaluated: float = 0.0
    accounts_evaluated: float = 0.0
    evaluation_ms: tuple[float, ...] = ()  # mean, p99 (histogram bucket bound)
    tick_age_ms: tuple[float, ...] = ()
    drain_seconds: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    emitted_s: list[float] = field(default_factory=list)
    liquidation_latencies_ms: list[float] = field(default_factory=list)
    latency_thirds_ms: list[float] = field(default_factory=list)
    resolved: int = 0
    liquidations: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0
    others: list[str] = field(default_factory=list)
    scenarios: list[str] = field(default_factory=list)
    logs: Path = Path()

    @property
    def seconds(self) -> float:
        return self.window[1] - self.window[0]


@dataclass
class Context:
    """The shared resources of one benchmark run."""

    args: argparse.Namespace
    server: RedisServer
    client: redis.Redis
    daemons: Daemons
    symbols: tuple[str, ...]


def start_pipeline(ctx: Context) -> list[int]:
    """Executor and workers; returns the workers' metrics ports."""
    for number in range(ctx.args.executors):
        command = marginwatch("executor", "--loglevel", "WARNING")
        ctx.daemons.start(f"executor-{number}" if number else "executor", command)
    ports = []
    for number, spec in enumerate(worker_specs(ctx.args.partitions)):
        port = free_port()
        ports.append(port)
        command = marginwatch("worker", "--partitions", spec, "--loglevel", "WARNING")
        ctx.daemons.start(f"worker-{number}", command, MARGINWATCH_METRICS_PORT=str(port))
    return ports


def start_profilers(daemons: Daemons, seconds: float) -> None:
    """``py-spy record`` of every worker and executor, as raw stacks in the logs directory."""
    py_spy = Path(sys.executable).with_name("py-spy")
    for name, pid in {**daemons.pids("worker"), **daemons.pids("executor")}.items():
        output = daemons.logs / f"{name}.py-spy.txt"
        daemons.start(
            f"py-spy-{name}",
            [
                str(py_spy),
                "record",
                "--pid",
                str(pid),
                "--idle",
                "--threads",
                "--rate",
                "50",
                "--format",
                "raw",
                "--duration",
                f"{seconds:.0f}",
                "-o",
                str(output),
            ],
        )


def all_evaluated(client: redis.Redis, partitions: int, sequence: int) -> bool:
    marks = client.mget([keys.partition_evaluated(p) for p in range(partitions)])
    return all(mark is not None and int(mark) >= sequence for mark in marks)


def caught_up(client: redis.Redis, partitions: int) -> bool:
    """Every partition has read the newest tick; no evaluation or action is queued."""
    sample = take_sample(client, partitions, {})
    queued = sample.partition_queued + sample.actions_queued + sample.unacked
    return sample.max_lag == 0 and queued == 0 and sample.pending_flags == 0


def run_pipeline(ctx: Context, book: Book) -> PipelineRun:
    """Start the daemons, wait for the first evaluations, run the producer, measure."""
    run = PipelineRun(scenarios=crash_scenarios(ctx.symbols, ctx.args), logs=ctx.daemons.logs)
    client, partitions = ctx.client, ctx.args.partitions
    started = time.monotonic()
    ports = start_pipeline(ctx)
    seeded = int(client.get(keys.TICK_SEQUENCE) or 0)
    wait_until(
        lambda: all_evaluated(client, partitions, seeded),
        FIRST_EVALUATION_TIMEOUT_S,
        "the first evaluation of every partition",
        ctx.daemons,
    )
    run.ready_seconds = time.monotonic() - started
    counter = EvaluationCounter(ctx.server.url, partitions)
    try:
        measure_producer_run(ctx, run, ports, counter, book)
    finally:
        counter.stop()
    read_margin_calls(client, run)
    write_timeline(run, ctx.daemons.logs / "timeline.csv")
    for name, process in ctx.daemons.processes.items():
        if name.startswith("py-spy"):
            process.wait(timeout=60)
    ctx.daemons.stop(*ctx.daemons.pids("executor"), *ctx.daemons.pids("worker"))
    return run


def measure_producer_run(
    ctx: Context, run: PipelineRun, ports: list[int], counter: EvaluationCounter, book: Book
) -> None:
    client, daemons = ctx.client, ctx.daemons
    pids = {**daemons.pids(), "redis": ctx.server.process.pid}
    others_before, busy_before = all_cpu_seconds(), machine_busy_seconds()
    sequence_before = int(client.get(keys.TICK_SEQUENCE) or 0)
    command = producer_command(ctx.symbols, ctx.args.seconds, ctx.args.seed, run.scenarios)
    producer = daemons.start("producer", command)
    pids["producer"] = producer.pid
    if ctx.args.py_spy:
        start_profilers(daemons, ctx.args.seconds)
    wait_until(
        lambda: int(client.get(keys.TICK_SEQUENCE) or 0) > sequence_before,
        60,
        "the producer's first tick",
        daemons,
    )
    first_tick = time.time()
    metrics_before = scrape_all(ports)  # the window starts here (not with the seeded ticks)
    run.samples = sample_while(
        lambda: producer.poll() is None,
        lambda: take_sample(client, ctx.args.partitions, pids),
        daemons,
    )
    run.window = (first_tick, time.time())
    metrics_after = scrape_all(ports)
    run.cpu = cpu_shares(run.samples)
    run.others = other_processes(others_before, {os.getpid(), *pids.values()}, run.seconds)
    run.machine_busy = (machine_busy_seconds() - busy_before) / run.seconds
    run.published, run.rejects = published_ticks(daemons.logs / "producer.log")
    run.sequence_delta = int(client.get(keys.TICK_SEQUENCE) or 0) - sequence_before
    count_evaluations(run, counter, book, metrics_before, metrics_after)
    with suppress(RuntimeError):
        run.drain_seconds = wait_until(
            lambda: caught_up(client, ctx.args.partitions),
            DRAIN_TIMEOUT_S,
            "the backlog to drain",
            daemons,
        )


def count_evaluations(
    run: PipelineRun,
    counter: EvaluationCounter,
    book: Book,
    before: Mapping[str, float] | None,
    after: Mapping[str, float] | None,
) -> None:
    """Positions and accounts evaluated per second over the producer's window."""
    run.evaluations = counter.counts(*run.window)
    accounts = sum(n * a for n, a in zip(run.evaluations, book.partition_accounts, strict=True))
    run.accounts_evaluated = accounts / run.seconds
    if before and after and after[POSITIONS_METRIC] > before[POSITIONS_METRIC]:
        run.method = (
            f"positions: the workers' /metrics ({POSITIONS_METRIC}); accounts: keyspace "
            "notifications of each evaluation x the partition's accounts"
        )
        run.positions_evaluated = (after[POSITIONS_METRIC] - before[POSITIONS_METRIC]) / run.seconds
        run.evaluation_ms = tuple(  # mean, p99 bucket bound
            1000 * v
            for v in (
                metric_mean(before, after, DURATION_METRIC),
                metric_quantile(before, after, DURATION_METRIC, 0.99),
            )
        )
        run.tick_age_ms = tuple(
            1000 * v
            for v in (
                metric_mean(before, after, TICK_AGE_METRIC),
                metric_quantile(before, after, TICK_AGE_METRIC, 0.99),
            )
        )
        return
    run.method = (
        "evaluations counted from keyspace notifications on each partition's evaluated key "
        "x the partition's positions as loaded (no /metrics served); accounts the same way"
    )
    positions = sum(n * p for n, p in zip(run.evaluations, book.partition_positions, strict=True))
    run.positions_evaluated = positions / run.seconds


def stream_entries(client: redis.Redis, stream: str) -> list[dict[str, str]]:
    entries: list[Any] = client.xrange(stream)  # type: ignore[assignment]
    return [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in entries]


def read_margin_calls(client: redis.Redis, run: PipelineRun) -> None:
    """Latency of every MARGIN_CALL from the producer's run: emitted - tick event time."""
    start_ms = run.window[0] * 1000 - 2_000
    events = stream_entries(client, keys.MARGIN_CALL_EVENTS)
    calls = [e for e in events if e["kind"] == "margin_call"]
    calls = [e for e in calls if int(e["tick_event_time_ms"]) >= start_ms]
    calls.sort(key=lambda e: int(e["emitted_ms"]))
    run.latencies_ms = [float(int(e["emitted_ms"]) - int(e["tick_event_time_ms"])) for e in calls]
    run.emitted_s = [int(e["emitted_ms"]) / 1000 for e in calls]
    run.resolved = sum(e["kind"] == "resolved" for e in events)
    thirds = np.array_split(np.array(run.latencies_ms), 3) if run.latencies_ms else []
    run.latency_thirds_ms = [float(np.percentile(t, 99)) if len(t) else 0.0 for t in thirds]
    for entry in stream_entries(client, keys.LIQUIDATIONS):
        run.liquidations[entry["kind"]] = run.liquidations.get(entry["kind"], 0) + 1
        if int(entry["tick_event_time_ms"]) >= start_ms:
            latency = int(entry["executed_ms"]) - int(entry["tick_event_time_ms"])
            run.liquidation_latencies_ms.append(float(latency))


def write_timeline(run: PipelineRun, path: Path) -> None:
    """One CSV row per sample: backlog figures and the margin calls emitted in that second."""
    emitted, latencies = np.array(run.emitted_s), np.array(run.latencies_ms)
    rows = ["t_s,max_lag_ticks,partition_queued,actions_queued,unacked,margin_calls,"
            "latency_p50_ms,latency_max_ms"]  # fmt: skip
    for sample in run.samples:
        chosen = latencies[(emitted >= sample.at - 1) & (emitted < sample.at)]
        p50, top = (np.percentile(chosen, 50), chosen.max()) if chosen.size else (0.0, 0.0)
        rows.append(
            f"{sample.at - run.window[0]:.1f},{sample.max_lag},{sample.partition_queued},"
            f"{sample.actions_queued},{sample.unacked},{chosen.size},{p50:.0f},{top:.0f}"
        )
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# The naive baseline


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
    pids = {**daemons.pids("naive"), "redis": ctx.server.process.pid}
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
        webhooks_queued=0,
        unacked=int(unacked),
        pending_flags=0,
        redis_used=int(memory["used_memory"]),
        rss_kib={name: rss_kib(pid) for name, pid in pids.items()},
        cpu_seconds={name: cpu_seconds(pid) for name, pid in pids.items()},
        counters={n: int(v or 0) for n, v in zip(naive.COUNTERS, counters, strict=True)},
    )


def warm_up_naive(ctx: Context, account_ids: list[str]) -> None:
    """Send a few tasks and wait until both workers have run some (imports, first reads)."""
    naive.send(naive.make_app(ctx.server.url), account_ids[:20])
    wait_until(
        lambda: int(ctx.client.get(naive.DONE) or 0) >= 20,
        120,
        "the naive workers' first tasks",
        ctx.daemons,
    )
    ctx.client.delete(*naive.COUNTERS)


# ---------------------------------------------------------------------------------------------
# The figures


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


def print_book(ctx: Context, book: Book) -> None:
    args = ctx.args
    generated_mean = book.generated_positions / book.accounts
    print(
        f"book: {book.accounts:,} accounts, {book.positions:,} positions "
        f"({book.positions / book.accounts:.2f} per account), {len(ctx.symbols)} symbols, "
        f"{args.partitions} partitions (workers {', '.join(worker_specs(args.partitions))})"
    )
    print(
        f"  generator alone: {generated_mean:.2f} positions per account; "
        f"{book.merged_accounts:,} accounts ({100 * book.merged_accounts / book.accounts:.0f}%)"
        f" took a second generated account's positions on new symbols and its wallet, "
        f"to reach {args.positions_per_account:g} (--positions-per-account)"
    )
    print(
        f"  positions per partition: {min(book.partition_positions):,}-"
        f"{max(book.partition_positions):,}"
    )
    print(
        f"load: generated in {book.generate_seconds:.1f} s; stored (store_accounts) in "
        f"{book.store_seconds:.1f} s = {book.accounts / book.store_seconds:,.0f} accounts/s; "
        f"Redis used_memory after load {book.redis_used_bytes / 2**20:,.0f} MiB"
    )


def print_pipeline(ctx: Context, book: Book, run: PipelineRun) -> None:
    seconds = run.seconds
    print(
        f"pipeline: workers loaded and evaluated every partition once in "
        f"{run.ready_seconds:.1f} s; producer window {seconds:.1f} s"
    )
    print(f"  crashes: {len(run.scenarios)} ({', '.join(run.scenarios)})")
    print(
        f"ticks accepted: {run.published:,} by the producer's count = "
        f"{run.published / ctx.args.seconds:,.1f} ticks/s (tick sequence +{run.sequence_delta:,};"
        f" rejects: {run.rejects})"
    )
    total = sum(run.evaluations)
    print(
        f"evaluations: {total:,} in the window ({', '.join(map(str, run.evaluations))} by "
        f"partition) = {total / seconds / ctx.args.partitions:.2f} per partition per s, one "
        f"every {1000 * seconds * ctx.args.partitions / max(total, 1):.0f} ms"
    )
    print(
        f"positions evaluated: {run.positions_evaluated:,.0f} /s; accounts evaluated: "
        f"{run.accounts_evaluated:,.0f} /s  [method: {run.method}]"
    )
    if run.evaluation_ms:
        print(
            f"  from /metrics: evaluation duration mean {run.evaluation_ms[0]:.1f} ms, p99 <= "
            f"{run.evaluation_ms[1]:.0f} ms; age of the newest tick when an evaluation starts: "
            f"mean {run.tick_age_ms[0]:.1f} ms, p99 <= {run.tick_age_ms[1]:.0f} ms"
        )
    print_latency(run)
    print_backlog(run)
    print_memory(run.samples, book)
    print(
        "CPU (share of one core, over the window): "
        + ", ".join(f"{name} {100 * share:.0f}%" for name, share in run.cpu.items())
    )
    ours = sum(run.cpu.values())
    print(
        f"machine: {100 * run.machine_busy:.0f}% busy of {100 * (os.cpu_count() or 1)}% "
        f"(/proc/stat); the pipeline's processes {100 * ours:.0f}%, everything else "
        f"{100 * max(0.0, run.machine_busy - ours):.0f}% (this benchmark's sampler, other "
        "users' jobs, the kernel)"
    )
    print(
        "  busiest other processes alive through the window: " + ("; ".join(run.others) or "none")
    )


def print_latency(run: PipelineRun) -> None:
    values = run.latencies_ms
    print(
        f"MARGIN_CALL events: {len(values):,} (resolved: {run.resolved:,}; liquidation "
        f"stream: {run.liquidations or 'empty'})"
    )
    if not values:
        print("tick-to-MARGIN_CALL latency: no margin call in the window")
        return
    p50, p99 = percentile(values, 50), percentile(values, 99)
    verdict = "meets" if p99 < GOAL_P99_MS else "MISSES"
    print(
        f"tick-to-MARGIN_CALL latency: p50 {p50:,.0f} ms, p99 {p99:,.0f} ms, max "
        f"{max(values):,.0f} ms ({verdict} the p99 < {GOAL_P99_MS:.0f} ms goal); p99 by "
        f"thirds of the events: {', '.join(f'{v:,.0f}' for v in run.latency_thirds_ms)} ms"
    )
    liquidations = run.liquidation_latencies_ms
    if liquidations:
        print(
            f"  tick-to-liquidation-executed latency: p50 {percentile(liquidations, 50):,.0f} ms,"
            f" p99 {percentile(liquidations, 99):,.0f} ms ({len(liquidations):,} in the window)"
        )


def print_backlog(run: PipelineRun) -> None:
    samples = run.samples
    if len(samples) < 3:
        print("backlog: too few samples")
        return
    times = [s.at - samples[0].at for s in samples]
    rate = run.published / max(run.seconds, 1e-9)
    series = {
        "evaluation lag (newest tick seq - oldest partition's evaluated seq), ticks": (
            [s.max_lag for s in samples],
            rate / 2,
        ),
        "partition queues (LLEN, all partitions), messages": (
            [s.partition_queued for s in samples],
            2,
        ),
        f"action queues (LLEN of {', '.join(ACTION_QUEUES)}), messages": (
            [s.actions_queued for s in samples],
            20,
        ),
        "unacked Celery messages": ([s.unacked for s in samples], 5),
        "pending flags set": ([s.pending_flags for s in samples], 2),
    }
    growing = []
    print("backlog (first third mean -> last third mean, peak, slope per minute):")
    for name, (values, floor) in series.items():
        found = trend(times, values, floor)
        growing += [name] if found.growing else []
        print(
            f"  {name}: {found.first:,.1f} -> {found.last:,.1f}, peak {found.peak:,.0f}, "
            f"{found.slope_per_minute:+,.1f}/min{'  GROWING' if found.growing else ''}"
        )
    drain = "did not drain" if run.drain_seconds is None else f"{run.drain_seconds:.1f} s"
    verdict = f"GREW: {'; '.join(growing)}" if growing else "no growing backlog"
    print(
        f"  backlog verdict: {verdict} (growing = last third above first third by more than "
        f"half and a floor); caught up after the producer stopped in: {drain}"
    )


def print_memory(samples: Sequence[Sample], book: Book) -> None:
    if not samples:
        return
    names = list(samples[-1].rss_kib)
    peaks = {name: max(s.rss_kib.get(name, 0) for s in samples) for name in names}
    print(
        "memory (RSS peak / at end): "
        + ", ".join(f"{n} {mib(peaks[n])} / {mib(samples[-1].rss_kib[n])}" for n in names)
    )
    used = max(s.redis_used for s in samples)
    print(
        f"  Redis used_memory peak {used / 2**20:,.0f} MiB (after load "
        f"{book.redis_used_bytes / 2**20:,.0f} MiB)"
    )


def print_naive(ctx: Context, book: Book, run: PipelineRun, naive_run: NaiveRun) -> None:
    if not naive_run.samples:
        return
    done, positions = naive_run.rate(naive.DONE), naive_run.rate(naive.POSITIONS)
    demanded = naive_run.demanded / naive_run.seconds
    enqueued = naive_run.rate(naive.ENQUEUED)
    print(
        f"naive baseline ({naive_run.seconds:.0f} s, {WORKERS} solo workers with prefetch "
        f"{ctx.args.naive_prefetch}, one task per account per tick, exact path; rates after a "
        f"{naive_run.warm_up_seconds:g} s warm-up):"
    )
    print(
        f"  demanded {demanded:,.0f} tasks/s ({naive_run.ticks:,} ticks published); enqueued "
        f"{enqueued:,.0f} tasks/s; done {done:,.0f} accounts/s = {positions:,.0f} positions/s"
    )
    print(
        f"  totals: demanded {naive_run.demanded:,}; the dispatcher read "
        f"{naive_run.total(naive.TICKS_READ):,} ticks and enqueued "
        f"{naive_run.total(naive.ENQUEUED):,} tasks (dropped at the backlog cap of "
        f"{ctx.args.naive_max_backlog:,}: {naive_run.total(naive.DROPPED):,}); done "
        f"{naive_run.total(naive.DONE):,}; queue: {naive_run.samples[0].partition_queued:,} -> "
        f"{naive_run.samples[-1].partition_queued:,} messages"
    )
    if done:
        print(f"  keeping up would take {demanded / done:,.0f}x the naive workers' throughput")
    print_memory(naive_run.samples, book)
    print(
        "  CPU: "
        + ", ".join(f"{n} {100 * v:.0f}%" for n, v in cpu_shares(naive_run.samples).items())
    )
    if positions and done:
        print(
            "throughput ratio pipeline / naive: positions "
            f"{run.positions_evaluated / positions:,.0f}x, accounts "
            f"{run.accounts_evaluated / done:,.0f}x"
        )


def print_figures(ctx: Context, book: Book, run: PipelineRun, naive_run: NaiveRun | None) -> None:
    load = os.getloadavg()
    print("\n" + "=" * 30 + " marginwatch pipeline benchmark " + "=" * 30)
    print(
        f"machine: {os.cpu_count()} cores; load average at the end {load[0]:.2f} / "
        f"{load[1]:.2f} / {load[2]:.2f}; daemon logs: {run.logs}"
    )
    print_book(ctx, book)
    print_pipeline(ctx, book, run)
    if naive_run is not None:
        print_naive(ctx, book, run, naive_run)


# ---------------------------------------------------------------------------------------------
# Main


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


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


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
