"""The pipeline benchmark: the figures."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks import naive_baseline as naive
from benchmarks.pipeline.book import Book
from benchmarks.pipeline.config import (
    GOAL_CASCADE_LIQUIDATION_P99_MS,
    GOAL_CASCADE_LIQUIDATIONS_PER_SECOND,
    GOAL_LIQUIDATION_P99_MS,
    GOAL_P99_MS,
    WORKERS,
)
from benchmarks.pipeline.daemons import worker_specs
from benchmarks.pipeline.naive import NaiveRun
from benchmarks.pipeline.observe import Sample, cpu_shares, trend
from benchmarks.pipeline.run import Context, PipelineRun
from benchmarks.symbols import synthetic_count


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


def print_book(ctx: Context, book: Book) -> None:
    args = ctx.args
    generated_mean = book.generated_positions / book.accounts
    print(
        f"book: {book.accounts:,} accounts, {book.positions:,} positions "
        f"({book.positions / book.accounts:.2f} per account), {len(ctx.symbols)} symbols "
        f"({synthetic_count(ctx.symbols)} synthetic), "
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
        f"load: generated and stored (store_accounts, streaming) in {book.store_seconds:.1f} s "
        f"= {book.accounts / book.store_seconds:,.0f} accounts/s; "
        f"Redis used_memory after load {book.redis_used_bytes / 2**20:,.0f} MiB"
    )


def print_pipeline(ctx: Context, book: Book, run: PipelineRun) -> None:
    seconds = run.seconds
    print(
        f"pipeline: workers loaded and evaluated every partition once in "
        f"{run.ready_seconds:.1f} s; producer window {seconds:.1f} s"
    )
    shown = run.scenarios if len(run.scenarios) <= 12 else [*run.scenarios[:3], "..."]
    print(f"  crashes: {len(run.scenarios)} ({', '.join(shown)})")
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
    print_stress(ctx, run)
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


def print_stress(ctx: Context, run: PipelineRun) -> None:
    """The workers' stress computations, when ``--stress`` configured any."""
    if not ctx.args.stress:
        print("stress scenarios: none (--stress)")
        return
    scenarios = f"{len(ctx.args.stress)} ({', '.join(ctx.args.stress)})"
    every = f"every {ctx.args.stress_interval:g} s per partition"
    if not run.stress_ms:
        print(f"stress scenarios: {scenarios} {every}; no computation in the window")
        return
    count, mean, p99 = run.stress_ms
    print(f"stress scenarios: {scenarios} {every}: {count:.0f} computations in the window, "
          f"one partition's all scenarios in mean {mean:.1f} ms, p99 <= {p99:.0f} ms")  # fmt: skip


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
        goal = GOAL_CASCADE_LIQUIDATION_P99_MS if run.cascade else GOAL_LIQUIDATION_P99_MS
        p99 = percentile(liquidations, 99)
        print(
            f"  tick-to-liquidation-executed latency: p50 {percentile(liquidations, 50):,.0f} ms,"
            f" p99 {p99:,.0f} ms ({len(liquidations):,} in the window; "
            f"{'meets' if p99 <= goal else 'MISSES'} the p99 <= {goal:,.0f} ms goal)"
        )
        print_liquidation_rate(run)


def print_liquidation_rate(run: PipelineRun) -> None:
    """Liquidations executed per second across the executors: over the span from the first to
    the last, and in the busiest second; and what was still due at the end."""
    executed = np.array(sorted(run.liquidated_ms))
    if executed.size < 2:
        return
    span = max((executed[-1] - executed[0]) / 1000, 1e-3)
    per_second = np.bincount((executed - executed[0]) // 1000)
    print(
        f"  liquidations executed: {executed.size:,} in {span:.1f} s (first to last) = "
        f"{executed.size / span:,.0f}/s across the executors; busiest second "
        f"{per_second.max():,}; still due once drained: {run.due_at_end:,}"
    )
    if run.cascade:
        rate = executed.size / span
        verdict = "meets" if rate >= GOAL_CASCADE_LIQUIDATIONS_PER_SECOND else "MISSES"
        print(f"  cascade verdict: {verdict} the {GOAL_CASCADE_LIQUIDATIONS_PER_SECOND:,}/s goal")


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
        "action queues (LLEN of every partition's margin-call and liquidation queues), messages": (
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


def print_memory(samples: Sequence[Sample], book: Book, workers: bool = True) -> None:
    if not samples:
        return
    names = list(samples[-1].rss_kib)
    peaks = {name: max(s.rss_kib.get(name, 0) for s in samples) for name in names}
    print(
        "memory (RSS peak / at end): "
        + ", ".join(f"{n} {mib(peaks[n])} / {mib(samples[-1].rss_kib[n])}" for n in names)
    )
    if workers:
        print_worker_memory(samples, book)
    used = max(s.redis_used for s in samples)
    print(
        f"  Redis used_memory peak {used / 2**20:,.0f} MiB (after load "
        f"{book.redis_used_bytes / 2**20:,.0f} MiB)"
    )


def print_worker_memory(samples: Sequence[Sample], book: Book) -> None:
    """Each worker's RSS at the end over an empty worker's, per position it holds."""
    if not book.empty_worker_kib:
        return
    shares = []
    for number, spec in enumerate(worker_specs(len(book.partition_positions))):
        first, last = (int(bound) for bound in spec.split("-"))
        held = sum(book.partition_positions[first : last + 1])
        added = (samples[-1].rss_kib.get(f"worker-{number}", 0) - book.empty_worker_kib) * 1024
        shares.append(f"worker-{number} {added / max(held, 1):,.0f} B/position ({held:,})")
    print(f"  worker memory over an empty worker ({mib(book.empty_worker_kib)}): "
          + ", ".join(shares))  # fmt: skip


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
    print_memory(naive_run.samples, book, workers=False)
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


@dataclass(frozen=True)
class Result:
    """One run's figures, for the side-by-side comparison."""

    title: str
    book: Book
    run: PipelineRun


def print_comparison(results: Sequence[Result]) -> None:
    """The runs side by side. On one 2-core box this is the distributed engines' overhead, not
    their scale-out: every node, broker and daemon shares the same two cores."""
    load = os.getloadavg()
    print("\n" + "=" * 30 + " engines side by side " + "=" * 30)
    print(f"machine: {os.cpu_count()} cores; load average {load[0]:.2f} / {load[1]:.2f} / "
          f"{load[2]:.2f}")  # fmt: skip
    print("every server and daemon shares this one box: this is overhead, not scale-out")
    rows = [
        ("tick->MARGIN_CALL p50 ms", lambda r: percentile(r.run.latencies_ms, 50)),
        ("tick->MARGIN_CALL p99 ms", lambda r: percentile(r.run.latencies_ms, 99)),
        ("tick->liquidation p99 ms", lambda r: percentile(r.run.liquidation_latencies_ms, 99)),
        ("margin calls", lambda r: float(len(r.run.latencies_ms))),
        ("liquidations executed", lambda r: float(len(r.run.liquidation_latencies_ms))),
        ("evaluation mean ms", lambda r: r.run.evaluation_ms[0] if r.run.evaluation_ms else nan),
        ("state memory after load MiB", lambda r: r.book.redis_used_bytes / 2**20),
        ("servers' CPU (cores)", lambda r: servers_cpu(r.run)),
    ]
    print(f"{'':32}" + "".join(f"{r.title[:34]:>36}" for r in results))
    for name, value in rows:
        print(f"{name:32}" + "".join(f"{value(r):>36,.1f}" for r in results))


nan = float("nan")


def servers_cpu(run: PipelineRun) -> float:
    """CPU of the Redis and RabbitMQ processes together, in cores, over the run."""
    shares = cpu_shares(run.samples)
    return sum(v for name, v in shares.items() if name.startswith(("redis", "rabbitmq")))
