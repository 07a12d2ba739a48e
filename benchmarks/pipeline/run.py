"""The pipeline benchmark: the pipeline run."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis

from benchmarks.pipeline.book import Book
from benchmarks.pipeline.config import (
    DURATION_METRIC,
    FIRST_EVALUATION_TIMEOUT_S,
    POSITIONS_METRIC,
    STRESS_DURATION_METRIC,
    TICK_AGE_METRIC,
)
from benchmarks.pipeline.daemons import (
    Daemons,
    cascade_scenarios,
    crash_scenarios,
    marginwatch,
    producer_command,
    published_ticks,
    wait_until,
    worker_specs,
)
from benchmarks.pipeline.engines import Engines
from benchmarks.pipeline.observe import (
    EvaluationCounter,
    Probe,
    Sample,
    cpu_shares,
    metric_mean,
    metric_quantile,
    sample_while,
    scrape_all,
    take_sample,
)
from benchmarks.pipeline.proc import all_cpu_seconds, machine_busy_seconds, other_processes, rss_kib
from marginwatch.base import keys
from marginwatch.cli.embedded_redis import free_port
from marginwatch.state import streams


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
    stress_ms: tuple[float, ...] = ()  # computations, mean, p99 (histogram bucket bound)
    drain_seconds: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    emitted_s: list[float] = field(default_factory=list)
    liquidation_latencies_ms: list[float] = field(default_factory=list)
    liquidated_ms: list[int] = field(default_factory=list)  # when each was executed
    due_at_end: int = 0  # liquidations still due once the pipeline drained
    cascade: bool = False  # every symbol moved at once (--cascade)
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
    engines: Engines
    client: redis.Redis
    daemons: Daemons
    symbols: tuple[str, ...]
    probe: Probe


def start_pipeline(ctx: Context) -> list[int]:
    """Executor and workers; returns the workers' metrics ports."""
    for number, spec in enumerate(worker_specs(ctx.args.partitions, ctx.args.executors)):
        command = marginwatch("executor", "--partitions", spec, "--loglevel", "WARNING")
        ctx.daemons.start(f"executor-{number}" if number else "executor", command)
    ports = []
    for number, spec in enumerate(worker_specs(ctx.args.partitions)):
        port = free_port()
        ports.append(port)
        command = marginwatch("worker", "--partitions", spec, "--loglevel", "WARNING")
        ctx.daemons.start(f"worker-{number}", command, MARGINWATCH_METRICS_PORT=str(port),
                          **stress_env(ctx.args))  # fmt: skip
    return ports


def stress_env(args: argparse.Namespace) -> dict[str, str]:
    """The workers' stress settings of ``--stress`` and ``--stress-interval`` (none without)."""
    if not args.stress:
        return {}
    return {"MARGINWATCH_STRESS_SCENARIOS": json.dumps(args.stress),
            "MARGINWATCH_STRESS_INTERVAL_SECONDS": f"{args.stress_interval:g}"}  # fmt: skip


def empty_worker_rss_kib(ctx: Context) -> int:
    """RSS of a worker that has loaded and evaluated empty partitions (before the book is
    stored): the base that the book's memory per position is measured over."""
    seeded = int(ctx.client.get(keys.TICK_SEQUENCE) or 0)
    spec = worker_specs(ctx.args.partitions)[0]
    worker = ctx.daemons.start("worker-empty", marginwatch("worker", "--partitions", spec))
    first, last = (int(bound) for bound in spec.split("-"))
    wait_until(lambda: all_evaluated(ctx.client, last + 1, seeded, first), 300,
               "the empty worker's first evaluations", ctx.daemons)  # fmt: skip
    rss = rss_kib(worker.pid)
    ctx.daemons.stop("worker-empty")
    ctx.client.delete(*(keys.partition_evaluated(p) for p in range(ctx.args.partitions)))
    return rss


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


def all_evaluated(client: redis.Redis, partitions: int, sequence: int, first: int = 0) -> bool:
    marks = [client.get(keys.partition_evaluated(p)) for p in range(first, partitions)]
    return all(mark is not None and int(mark) >= sequence for mark in marks)


def caught_up(probe: Probe) -> bool:
    """Every partition has read the newest tick; no evaluation or action is queued."""
    sample = take_sample(probe, {})
    queued = sample.partition_queued + sample.actions_queued + sample.unacked
    return sample.max_lag == 0 and queued == 0 and sample.pending_flags == 0


def run_pipeline(ctx: Context, book: Book) -> PipelineRun:
    """Start the daemons, wait for the first evaluations, run the producer, measure."""
    scenarios = cascade_scenarios(ctx.symbols, ctx.args) if ctx.args.cascade else None
    run = PipelineRun(scenarios=scenarios or crash_scenarios(ctx.symbols, ctx.args),
                      logs=ctx.daemons.logs, cascade=scenarios is not None)  # fmt: skip
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
    counter = EvaluationCounter(ctx.engines.primaries, partitions)
    try:
        measure_producer_run(ctx, run, ports, counter, book)
    finally:
        counter.stop()
    read_margin_calls(client, partitions, run)
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
    pids = {**daemons.pids(), **ctx.engines.pids}
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
        lambda: take_sample(ctx.probe, pids),
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
            lambda: caught_up(ctx.probe),
            ctx.args.drain_timeout,
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
        run.stress_ms = stress_durations(before, after)
        return
    run.method = (
        "evaluations counted from keyspace notifications on each partition's evaluated key "
        "x the partition's positions as loaded (no /metrics served); accounts the same way"
    )
    positions = sum(n * p for n, p in zip(run.evaluations, book.partition_positions, strict=True))
    run.positions_evaluated = positions / run.seconds


def stress_durations(before: Mapping[str, float], after: Mapping[str, float]) -> tuple[float, ...]:
    """Stress computations in the window (over every partition), their mean and p99 in ms."""
    name = STRESS_DURATION_METRIC
    count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    if not count:
        return ()
    mean, p99 = metric_mean(before, after, name), metric_quantile(before, after, name, 0.99)
    return count, 1000 * mean, 1000 * p99


def stream_entries(
    client: redis.Redis, stream: streams.StreamName, partitions: int
) -> list[dict[str, str]]:
    """Every partition's entries of ``stream``, oldest first."""
    return [fields for _id, fields in streams.read_all(client, stream, partitions)]


def read_margin_calls(client: redis.Redis, partitions: int, run: PipelineRun) -> None:
    """Latency of every MARGIN_CALL from the producer's run: emitted - tick event time."""
    start_ms = run.window[0] * 1000 - 2_000
    events = stream_entries(client, keys.margin_call_events, partitions)
    calls = [e for e in events if e["kind"] == "margin_call"]
    calls = [e for e in calls if int(e["tick_event_time_ms"]) >= start_ms]
    calls.sort(key=lambda e: int(e["emitted_ms"]))
    run.latencies_ms = [float(int(e["emitted_ms"]) - int(e["tick_event_time_ms"])) for e in calls]
    run.emitted_s = [int(e["emitted_ms"]) / 1000 for e in calls]
    run.resolved = sum(e["kind"] == "resolved" for e in events)
    thirds = np.array_split(np.array(run.latencies_ms), 3) if run.latencies_ms else []
    run.latency_thirds_ms = [float(np.percentile(t, 99)) if len(t) else 0.0 for t in thirds]
    for entry in stream_entries(client, keys.liquidations, partitions):
        run.liquidations[entry["kind"]] = run.liquidations.get(entry["kind"], 0) + 1
        if int(entry["tick_event_time_ms"]) >= start_ms:
            latency = int(entry["executed_ms"]) - int(entry["tick_event_time_ms"])
            run.liquidation_latencies_ms.append(float(latency))
            if entry["kind"] == "liquidation":
                run.liquidated_ms.append(int(entry["executed_ms"]))
    run.due_at_end = sum(client.zcard(keys.due_liquidations(p)) for p in range(partitions))


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
