"""``marginwatch stress``: the book under price shocks (``docs/stress.md``).

A thin shell: ``base.stress_specs`` reads the options, ``state.live_book`` reads the live book
(or ``base.snapshot`` a snapshot), ``engine.stress`` runs each scenario over the whole book and
``base.stress_report`` writes the table or the JSON document. The clock is read here only:
when the read starts, how long it and the scenarios take, when a progress line is due.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from marginwatch.base.exits import EXIT_OK
from marginwatch.base.settings import ConfigurationError, Settings, bracket_tables, redis_url
from marginwatch.base.snapshot import Snapshot, collector_paused, parse_snapshot
from marginwatch.base.stress_report import StressRun, stress_document, stress_table
from marginwatch.base.stress_specs import (
    LIVE_CONSISTENCY,
    MAX_SCENARIOS,
    PROGRESS_EVERY_SECONDS,
    SNAPSHOT_CONSISTENCY,
    TOP_CONTRIBUTORS,
    SpecError,
    StressSpecs,
    adl_symbols_of,
    adl_top_of,
    betas_of,
    impact_of,
    insurance_fund_of,
    max_rounds_of,
    scenarios_of,
)
from marginwatch.base.ticks import Tick
from marginwatch.cli.errors import InputError
from marginwatch.engine.batch import BatchResult, BracketArrays, columns_of
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.scenarios import ALL, Betas, Scenario, ScenarioError, moves, shocked_marks
from marginwatch.engine.stress import (
    Cascade,
    ExactPath,
    ScenarioOutcome,
    StressBook,
    run_scenario,
    stress_book,
    warm_up,
)
from marginwatch.engine.stress_adl import Deleverage
from marginwatch.engine.types import Account
from marginwatch.state.connection import open_redis
from marginwatch.state.live_book import check_partition_count, read_live_book
from marginwatch.state.prices import read_ticks


@dataclass(frozen=True)
class Plan:
    """The scenarios, the betas and the fund of a snapshot, as the options give them."""

    scenarios: list[Scenario]
    betas: Betas | None
    fund: Decimal
    cascade: Cascade | None
    adl_top: int
    adl_symbols: int


@dataclass(frozen=True)
class Loaded:
    """A book ready for the scenarios, with its marks and fund."""

    book: StressBook
    exact: ExactPath
    marks: Mapping[str, Decimal]
    fund: Decimal
    newest_tick: str | None
    consistent: str


@dataclass(frozen=True)
class Prepared:
    """A scenario with the moves it reports and its shocked marks."""

    scenario: Scenario
    shown: Mapping[str, Decimal]
    marks: Mapping[str, Decimal]


class Progress:
    """Progress lines on stderr, at most one per ``PROGRESS_EVERY_SECONDS``, the first that
    long after the start of a step (the read, the scenarios): a short step prints none."""

    def __init__(
        self, stream: TextIO, clock: Callable[[], float] = time.monotonic, command: str = "stress"
    ) -> None:
        self.stream, self.clock, self.command = stream, clock, command
        self.restart()

    def restart(self) -> None:
        """A new step starts: its first line is due ``PROGRESS_EVERY_SECONDS`` from now."""
        self.due_at = self.clock() + PROGRESS_EVERY_SECONDS

    def note(self, text: str) -> None:
        now = self.clock()
        if now >= self.due_at:
            self.stream.write(f"marginwatch {self.command}: {text}\n")
            self.stream.flush()
            self.due_at = now + PROGRESS_EVERY_SECONDS


def run_stress(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    """Read the book, run every scenario, print the table or (``--json``) the document."""
    progress = Progress(stderr)
    warm_up()
    read_at, started = utc_text(time.time()), time.perf_counter()
    with collector_paused():
        loaded, plan = load(args, settings, specs_of(args), progress)
    gc.freeze()  # the book lives as long as the command: no collection walks it again
    read_seconds = time.perf_counter() - started
    prepared = prepare(plan, loaded)
    started = time.perf_counter()
    outcomes = run_all(loaded, prepared, plan, progress)
    run = stress_run(loaded, read_at, read_seconds, time.perf_counter() - started)
    run = replace(run, rounds=plan.cascade is not None)
    document = json.dumps(stress_document(run, outcomes), indent=2) + "\n"
    stdout.write(document if args.json else stress_table(run, outcomes))
    return EXIT_OK


def specs_of(args: argparse.Namespace) -> StressSpecs:
    """The options as given."""
    return StressSpecs(
        args.shock or (),
        args.grid,
        args.beta or (),
        args.beta_base,
        args.insurance_fund,
        args.impact or (),
        args.max_rounds,
        args.adl_top,
        args.adl_symbols,
    )


def load(
    args: argparse.Namespace, settings: Settings, specs: StressSpecs, progress: Progress
) -> tuple[Loaded, Plan]:
    """The snapshot's book, or the live one; the options are read before the live book is."""
    if args.snapshot:
        snapshot = read_snapshot(args.snapshot, settings)
        plan = plan_of(specs, snapshot.tables, snapshot=True)
        return snapshot_book(snapshot, settings, plan.fund), plan
    tables = bracket_tables(settings)
    plan = plan_of(specs, tables, snapshot=False)
    return live_book(settings, tables, progress), plan


def plan_of(specs: StressSpecs, tables: Mapping[str, BracketTable], snapshot: bool) -> Plan:
    """The options read against the symbols of ``tables``; a bad one is an ``InputError``."""
    try:
        scenarios = scenarios_of(specs, tables, MAX_SCENARIOS)
        fund = insurance_fund_of(specs, snapshot)
        betas, cascade = betas_of(specs, tables), cascade_of(specs, tables)
        adl = adl_top_of(specs), adl_symbols_of(specs)
        return Plan(scenarios, betas, fund, cascade, *adl)
    except SpecError as error:
        raise InputError(str(error)) from None


def cascade_of(specs: StressSpecs, tables: Mapping[str, BracketTable]) -> Cascade | None:
    """The rounds ``--impact`` asks for (``None`` without it)."""
    impact = impact_of(specs, tables)
    return None if impact is None else Cascade(impact, max_rounds_of(specs))


def read_snapshot(path: str, settings: Settings) -> Snapshot:
    """The snapshot of ``path``, its brackets over the tables in force."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"--snapshot: {path}: cannot read ({error.strerror})") from None
    return parse_snapshot(text, bracket_tables(settings))


def snapshot_book(snapshot: Snapshot, settings: Settings, fund: Decimal) -> Loaded:
    """A snapshot's accounts laid out, confirmed exactly from the snapshot's accounts."""
    brackets = BracketArrays.from_tables(snapshot.tables, sorted(snapshot.tables))
    book = stress_book(columns_of(snapshot.accounts, brackets), brackets)
    accounts = snapshot.accounts
    exact = exact_path(settings, snapshot.tables, lambda number: accounts[number])
    return Loaded(book, exact, snapshot.mark_prices, fund, None, SNAPSHOT_CONSISTENCY)


def live_book(settings: Settings, tables: Mapping[str, BracketTable], progress: Progress) -> Loaded:
    """Every partition of the live book, the newest marks and the partitions' ledgers."""
    client = open_redis(redis_url(settings))
    check_partition_count(client, settings.partitions)
    brackets = BracketArrays.from_tables(tables, sorted(tables))
    live = read_live_book(
        client, settings.partitions, brackets.index, partition_read(progress, settings.partitions)
    )
    ticks = read_ticks(client)
    book = stress_book(live.columns(), brackets)
    marks = {symbol: tick.mark_price for symbol, tick in ticks.items()}
    require_marks(book, marks)
    exact = exact_path(settings, tables, live.account)
    return Loaded(book, exact, marks, live.fund, newest_tick(ticks), LIVE_CONSISTENCY)


def partition_read(progress: Progress, partitions: int) -> Callable[[int], None]:
    """What to tell ``progress`` once a partition is read."""
    return lambda partition: progress.note(f"read partition {partition + 1} of {partitions}")


def exact_path(
    settings: Settings, tables: Mapping[str, BracketTable], account: Callable[[int], Account]
) -> ExactPath:
    """The exact path with the settings' thresholds and clearance fee rates."""
    return ExactPath(account, tables, settings.thresholds, settings.liquidation_fee_rate_for)


def require_marks(book: StressBook, marks: Mapping[str, Decimal]) -> None:
    """Every symbol held has a mark price."""
    missing = sorted(set(book.held_symbols) - set(marks))
    if missing:
        raise ConfigurationError(f"no mark price yet for {', '.join(missing)}")


def newest_tick(ticks: Mapping[str, Tick]) -> str | None:
    """The event time of the newest tick (by sequence); ``None`` without ticks."""
    newest = max(ticks.values(), key=lambda tick: tick.sequence, default=None)
    return None if newest is None else utc_text(newest.event_time_ms / 1000)


def utc_text(seconds: float) -> str:
    """A time as the logs write it: ``2024-10-31T12:00:00.123Z``."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def prepare(plan: Plan, loaded: Loaded) -> list[Prepared]:
    """Each scenario's moves and shocked marks, all checked before any runs."""
    named = {symbol for s in plan.scenarios for symbol in s.shocks if symbol != ALL}
    shown = set(loaded.book.held_symbols) | named
    try:
        return [prepared(s, plan.betas, loaded.marks, shown) for s in plan.scenarios]
    except ScenarioError as error:
        raise InputError(f"--beta: {error}") from None


def prepared(
    scenario: Scenario, betas: Betas | None, marks: Mapping[str, Decimal], shown: set[str]
) -> Prepared:
    """The moves of every symbol with a mark or shown; the marks shocked by them."""
    by_symbol = moves(scenario, set(marks) | shown, betas)
    reported = {symbol: by_symbol[symbol] for symbol in sorted(shown)}
    return Prepared(scenario, reported, shocked_marks(marks, by_symbol))


def run_all(
    loaded: Loaded, prepared: Sequence[Prepared], plan: Plan, progress: Progress
) -> list[ScenarioOutcome]:
    """Every scenario in turn (with its rounds under the plan's cascade, and who ADL takes
    when the fund is exhausted), over one buffer of the screen."""
    progress.restart()
    out = BatchResult.allocate(loaded.book.book)
    deleverage = Deleverage(loaded.fund, plan.adl_top, plan.adl_symbols)
    outcomes = []
    for number, item in enumerate(prepared, start=1):
        outcomes.append(run_scenario(loaded.book, loaded.exact, item.scenario, item.shown,
                                     item.marks, TOP_CONTRIBUTORS, out, plan.cascade,
                                     deleverage))  # fmt: skip
        progress.note(f"scenario {number} of {len(prepared)} ({item.scenario.name}) done")
    return outcomes


def stress_run(loaded: Loaded, read_at: str, read_seconds: float, seconds: float) -> StressRun:
    """What the report says of the read and the run."""
    book = loaded.book.book
    return StressRun(read_at, loaded.newest_tick, loaded.consistent, read_seconds, seconds,
                     loaded.fund, loaded.book.accounts, book.pools, book.positions)  # fmt: skip
