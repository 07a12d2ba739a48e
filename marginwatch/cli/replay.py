"""``marginwatch replay``: a recorded or planned path of mark prices run through a snapshot's
book offline, as fast as the machine allows (``docs/replay.md``).

A thin shell: ``cli.stress.read_snapshot`` reads the book, ``cli.tick_path`` the path (the
producer's replay reader), ``engine.replay`` runs it by the settings' rules, and
``base.replay_report`` writes the timeline or the JSON document. The clock is read here only:
how long the read and the replay take, when a progress line is due.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from marginwatch.base.exits import EXIT_OK
from marginwatch.base.replay_report import ReplayRun, replay_document, replay_table
from marginwatch.base.settings import Settings
from marginwatch.base.snapshot import Snapshot, collector_paused
from marginwatch.base.stress_specs import SpecError, StressSpecs, insurance_fund_of
from marginwatch.cli.errors import InputError
from marginwatch.cli.stress import Progress, read_snapshot
from marginwatch.cli.tick_path import TickPath, read_tick_path
from marginwatch.engine.batch import BracketArrays
from marginwatch.engine.replay import Replay, ReplayRules, replay_path
from marginwatch.engine.stress import warm_up


@dataclass(frozen=True)
class Loaded:
    """The book laid out for the replay, and its path."""

    replay: Replay
    path: TickPath
    snapshot: Snapshot


def run_replay(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    """Read the snapshot and the path, replay it, print the timeline or (``--json``) the
    document."""
    progress = Progress(stderr, command="replay")
    warm_up()
    fund = fund_of(args.insurance_fund)
    started = time.perf_counter()
    with collector_paused():
        loaded = load(args, settings, fund)
    gc.freeze()  # the book lives as long as the command: no collection walks it again
    read_seconds = time.perf_counter() - started
    progress.restart()
    started = time.perf_counter()
    events = replay_path(loaded.replay, loaded.path.moments, moment_done(progress, loaded))
    run = replay_run(args, loaded, fund, read_seconds, time.perf_counter() - started)
    document = json.dumps(replay_document(run, events), indent=2) + "\n"
    stdout.write(document if args.json else replay_table(run, events))
    return EXIT_OK


def fund_of(amount: str | None) -> Decimal:
    """``--insurance-fund``, as ``stress --snapshot`` reads it (default 0)."""
    try:
        return insurance_fund_of(StressSpecs(insurance_fund=amount), snapshot=True)
    except SpecError as error:
        raise InputError(str(error)) from None


def load(args: argparse.Namespace, settings: Settings, fund: Decimal) -> Loaded:
    """The snapshot's book (its brackets over the tables in force) and the path's moments,
    checked against the snapshot's symbols."""
    snapshot = read_snapshot(args.snapshot, settings)
    symbols = set(snapshot.mark_prices) & set(snapshot.tables)
    path = read_tick_path(Path(args.ticks), symbols)
    if not path.ticks:
        raise InputError(f"--ticks: {args.ticks}: no tick")
    rules = ReplayRules(settings.thresholds, settings.episode_rules, snapshot.tables,
                        settings.liquidation_fee_rate_for)  # fmt: skip
    brackets = BracketArrays.from_tables(snapshot.tables, sorted(snapshot.tables))
    replay = Replay(list(snapshot.accounts), dict(snapshot.mark_prices), brackets, rules, fund)
    return Loaded(replay, path, snapshot)


def moment_done(progress: Progress, loaded: Loaded) -> Callable[[int], None]:
    """What to tell ``progress`` once a moment is replayed."""
    total = len(loaded.path.moments)
    return lambda number: progress.note(f"moment {number:,} of {total:,} replayed")


def replay_run(
    args: argparse.Namespace, loaded: Loaded, fund: Decimal, read_seconds: float, seconds: float
) -> ReplayRun:
    """What the report says of the read and the replay."""
    book = loaded.replay.book
    return ReplayRun(args.snapshot, args.ticks, len(loaded.snapshot.accounts), book.pools,
                     book.positions, loaded.path.ticks, len(loaded.path.moments), read_seconds,
                     seconds, fund, loaded.replay.fund)  # fmt: skip
