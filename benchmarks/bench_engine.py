"""Engine benchmark: full re-evaluation of a large book on one core, batch path beside exact.

    python -m benchmarks.bench_engine [--accounts 1000000] [--symbols 400] [--repeats 20]

Prints positions per second for ratios + statuses, the time for every liquidation price, the
memory per position, and the exact path's rate on a sample (so the ratio is visible). The book
is synthetic but uses the shipped Binance bracket tables (past the shipped symbols, synthetic
ones reuse them: ``benchmarks.symbols``), with log-normal notionals over every tier, ~15%
isolated positions and ~5% hedged cross symbols.
Between timed repeats every mark moves (a random walk of 0.3% per step), as ticks would.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from benchmarks.symbols import symbol_tables
from marginwatch.engine import batch
from marginwatch.engine.batch import FloatArray
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.exact import evaluate_account
from marginwatch.engine.incremental import SymbolPools
from marginwatch.engine.types import Account, MarginMode, Position, PositionMode, Thresholds

POSITIONS_PER_ACCOUNT = 3


def synthetic_columns(accounts: int, symbols: int, seed: int) -> batch.Columns:
    """A random book: 1-5 positions per account (mean 3).

    Notionals are log-normal with a median of 3,000 USDT (σ = 2: one in a hundred above
    ~300,000, a few in a million above ~50 million), so every tier of the tables is used.
    """
    rng = np.random.default_rng(seed)
    per_account = rng.integers(1, 2 * POSITIONS_PER_ACCOUNT, accounts)
    account = np.repeat(np.arange(accounts), per_account)
    rank = np.arange(account.shape[0]) - np.repeat(
        np.cumsum(per_account) - per_account, per_account
    )
    symbol = ((rng.integers(0, symbols, accounts)[account] + 37 * rank) % symbols).astype(np.int32)
    notional = np.clip(rng.lognormal(np.log(3_000), 2.0, account.shape[0]), 10, 5e8)
    side = np.where(rng.random(account.shape[0]) < 0.5, 1.0, -1.0)
    hedge = (rng.random(account.shape[0]) < 0.05) & (rank % 2 == 1)  # second leg of a symbol
    side[hedge] = -side[np.flatnonzero(hedge) - 1]
    symbol[hedge] = symbol[np.flatnonzero(hedge) - 1]
    isolated = (rng.random(account.shape[0]) < 0.15) & ~hedge
    leverage = rng.integers(2, 21, account.shape[0])
    entry = np.exp(rng.uniform(np.log(0.01), np.log(60_000), symbols))[symbol]
    margin = notional / leverage
    cross_wallet = np.bincount(account, weights=margin * ~isolated, minlength=accounts)
    return batch.Columns(
        account=account.astype(np.int64),
        isolated=isolated,
        symbol=symbol,
        quantity=side * notional / entry,
        entry_price=entry,
        isolated_wallet=margin * rng.uniform(1.0, 1.5, account.shape[0]),
        cross_wallet=cross_wallet * rng.uniform(0.5, 3.0, accounts),
    )


def timed(action: Callable[[FloatArray], object], marks: list[FloatArray]) -> tuple[float, float]:
    """(first call, median of the others) in seconds, one call per marks array."""
    seconds = []
    for step in marks:
        start = time.perf_counter()
        action(step)
        seconds.append(time.perf_counter() - start)
    return seconds[0], float(np.median(seconds[1:]))


def mark_walk(start: FloatArray, steps: int, rng: np.random.Generator) -> list[FloatArray]:
    """``steps`` mark arrays, each 0.3% (σ) from the previous one."""
    walk = [start]
    for _ in range(steps - 1):
        walk.append(walk[-1] * np.exp(rng.normal(0.0, 0.003, start.shape[0])))
    return walk


def exact_sample(
    book: batch.Book, tables: dict[str, BracketTable], names: list[str], count: int
) -> list[Account]:
    """The first ``count`` accounts of the book as exact domain accounts."""
    accounts = []
    for number in range(count):
        cross_pool = int(np.flatnonzero(book.pool_account == number)[0])
        positions = []
        pools = np.flatnonzero(book.pool_account == number)
        for pool in pools:
            for row in range(book.pool_starts[pool], book.pool_starts[pool + 1]):
                positions.append(_position(book, row, names, bool(book.pool_isolated[pool])))
        wallet = _decimal(book.pool_wallet[cross_pool])
        accounts.append(Account(f"acct-{number}", wallet, tuple(positions), _mode(positions)))
    return accounts


def _position(book: batch.Book, row: int, names: list[str], isolated: bool) -> Position:
    pool = int(np.searchsorted(book.pool_starts, row, side="right") - 1)
    return Position(
        symbol=names[book.symbol[row]],
        quantity=_decimal(book.quantity[row]),
        entry_price=_decimal(book.entry_price[row]),
        leverage=1,
        margin_mode=MarginMode.ISOLATED if isolated else MarginMode.CROSS,
        isolated_wallet=_decimal(book.pool_wallet[pool]) if isolated else None,
    )


def _decimal(value: float) -> Decimal:
    """The float's shortest decimal form, exactly."""
    return Decimal(repr(float(value)))


def _mode(positions: list[Position]) -> PositionMode:
    """One-way unless some symbol holds two cross legs (then the sample is read as hedge)."""
    keys = [(p.symbol, p.margin_mode) for p in positions]
    return PositionMode.HEDGE if len(set(keys)) < len(keys) else PositionMode.ONE_WAY


@dataclass
class Figures:
    """What the benchmark measured."""

    layout_seconds: float = 0.0
    ratios: tuple[float, float] = (0.0, 0.0)  # (first, median) seconds
    prices: tuple[float, float] = (0.0, 0.0)
    both: tuple[float, float] = (0.0, 0.0)
    result_bytes: int = 0
    rss_growth_bytes: int = 0
    uncertain_pools: int = 0
    exact_positions: int = 0
    exact_seconds: float = 0.0
    tick_seconds: float = 0.0  # median: one symbol's tick, its pools found and evaluated
    tick_pools: float = 0.0  # mean pools per symbol
    tick_rows: float = 0.0  # mean rows of those pools


def measure_batch(
    book: batch.Book, brackets: batch.BracketArrays, marks: list[FloatArray], figures: Figures
) -> batch.BatchResult:
    """Time ratios, prices and both over the mark walk, each on fresh buffers, so the first
    call of each is cold (no tier remembered from a previous mark, first-touch page faults)."""
    thresholds = Thresholds()
    batch.evaluate(book, brackets, marks[0], thresholds)  # compile or load the kernels

    def ratios_on(out: batch.BatchResult) -> Callable[[FloatArray], None]:
        return lambda step: batch.evaluate_ratios(book, brackets, step, thresholds, out)

    def prices_on(out: batch.BatchResult) -> Callable[[FloatArray], None]:
        return lambda step: batch.evaluate_liquidation_prices(
            book, brackets, step, out, batch.Venue.BINANCE
        )

    out = batch.BatchResult.allocate(book)
    figures.both = timed(lambda step: (ratios_on(out)(step), prices_on(out)(step)), marks)
    figures.ratios = timed(ratios_on(batch.BatchResult.allocate(book)), marks)
    for_prices = batch.BatchResult.allocate(book)
    ratios_on(for_prices)(marks[0])  # prices need the pool sums of the same marks
    figures.prices = timed(prices_on(for_prices), marks)
    figures.result_bytes = sum(int(value.nbytes) for value in vars(out).values())
    figures.uncertain_pools = int(out.uncertain.sum())
    measure_tick(book, brackets, marks, out, figures)
    return out


def measure_tick(
    book: batch.Book,
    brackets: batch.BracketArrays,
    marks: list[FloatArray],
    out: batch.BatchResult,
    figures: Figures,
) -> None:
    """The incremental cost of one tick: one symbol's mark moves; the pools holding it are
    found (``SymbolPools``) and evaluated, the others keep their figures. Every symbol once."""
    index = SymbolPools.of(book, brackets.floors.shape[0])
    current = marks[-1].copy()
    seconds, pools, rows = [], [], []
    sizes = np.diff(book.pool_starts)
    for symbol in range(brackets.floors.shape[0]):
        current[symbol] *= 1.001
        started = time.perf_counter()
        listed = index.pools_of(np.array([symbol]))
        batch.evaluate_ratios(book, brackets, current, Thresholds(), out, listed)
        seconds.append(time.perf_counter() - started)
        pools.append(listed.size)
        rows.append(int(sizes[listed].sum()))
    figures.tick_seconds = float(np.median(seconds))
    figures.tick_pools, figures.tick_rows = float(np.mean(pools)), float(np.mean(rows))


def measure_exact(
    book: batch.Book,
    tables: dict[str, BracketTable],
    marks: FloatArray,
    count: int,
    figures: Figures,
) -> None:
    """Time the exact path on the first ``count`` accounts of the book."""
    names = list(tables)
    sample = exact_sample(book, tables, names, count)
    marks_decimal = {name: _decimal(marks[i]) for i, name in enumerate(names)}
    start = time.perf_counter()
    for account in sample:
        evaluate_account(account, marks_decimal, tables, Thresholds())
    figures.exact_seconds = time.perf_counter() - start
    figures.exact_positions = sum(len(account.positions) for account in sample)


def report(args: argparse.Namespace, book: batch.Book, depth: int, figures: Figures) -> None:
    """Print the figures."""
    n = book.positions
    batch_rate = n / figures.ratios[1]
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load} at the end; one core used")
    exact_rate = figures.exact_positions / figures.exact_seconds
    print(
        f"book: {args.accounts:,} accounts, {n:,} positions, {book.pools:,} margin pools, "
        f"{args.symbols} symbols, up to {depth} tiers; laid out in "
        f"{figures.layout_seconds:.2f} s"
    )
    print(
        f"batch ratios+statuses: median {figures.ratios[1] * 1e3:.1f} ms (first, cold: "
        f"{figures.ratios[0] * 1e3:.1f} ms) = {batch_rate / 1e6:.0f} million positions/s, "
        "one core"
    )
    print(
        f"batch liquidation prices, all {n:,}: median {figures.prices[1] * 1e3:.1f} ms "
        f"(first, cold: {figures.prices[0] * 1e3:.1f} ms) = "
        f"{n / figures.prices[1] / 1e6:.0f} million positions/s"
    )
    print(
        f"full re-evaluation (both, one call after the other): median "
        f"{figures.both[1] * 1e3:.1f} ms (first, cold: {figures.both[0] * 1e3:.1f} ms)"
        f" = {n / figures.both[1] / 1e6:.0f} million positions/s"
    )
    print(
        f"memory: book {book.nbytes / n:.1f} B/position, result buffers "
        f"{figures.result_bytes / n:.1f} B/position; process peak RSS grew "
        f"{figures.rss_growth_bytes / n:.0f} B/position (includes generation)"
    )
    print(
        f"incremental, one symbol's tick: median {figures.tick_seconds * 1e3:.2f} ms for its "
        f"{figures.tick_pools:,.0f} pools ({figures.tick_rows:,.0f} rows) on average, against "
        f"{figures.ratios[1] * 1e3:.1f} ms for the full pass"
    )
    print(f"uncertain pools (exact path decides): {figures.uncertain_pools:,} of {book.pools:,}")
    print(
        f"exact path (Decimal): {figures.exact_positions:,} positions in "
        f"{figures.exact_seconds:.2f} s = {exact_rate:,.0f} positions/s; "
        f"batch/exact = {batch_rate / exact_rate:,.0f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=20, help="mark steps timed")
    parser.add_argument("--exact-accounts", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    tables = symbol_tables(args.symbols)
    brackets = batch.BracketArrays.from_tables(tables, list(tables))
    figures = Figures()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    book, _ = batch.book_from_columns(synthetic_columns(args.accounts, args.symbols, args.seed))
    figures.layout_seconds = time.perf_counter() - started
    rng = np.random.default_rng(args.seed + 1)
    entry_by_symbol = np.ones(args.symbols)
    entry_by_symbol[book.symbol] = book.entry_price
    start_marks = entry_by_symbol * rng.uniform(0.95, 1.05, args.symbols)
    marks = mark_walk(start_marks, 1 + args.repeats, rng)
    measure_batch(book, brackets, marks, figures)
    figures.rss_growth_bytes = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    ) * 1024
    measure_exact(book, tables, marks[-1], args.exact_accounts, figures)
    report(args, book, brackets.floors.shape[1] - 1, figures)


if __name__ == "__main__":
    main()
