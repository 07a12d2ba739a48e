"""The ``marginwatch`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any, TextIO

from marginwatch.base.account_lines import LOAD_FORMATS
from marginwatch.base.exits import EXIT_OK
from marginwatch.base.report import AdlOut, AdlRanking, ReportModel, render_report
from marginwatch.base.settings import LOG_LEVELS, Settings, read_settings
from marginwatch.base.snapshot import SnapshotError, SnapshotModel, parse_snapshot
from marginwatch.base.stress_specs import (
    ADL_SYMBOLS,
    ADL_TOP,
    MAX_ROUNDS,
    SNAPSHOT_INSURANCE_FUND,
    attach_negative_values,
)
from marginwatch.cli.config import print_config
from marginwatch.cli.errors import InputError, report
from marginwatch.engine.adl import report_quantiles
from marginwatch.engine.brackets import BracketTableError, load_bracket_file
from marginwatch.engine.exact import evaluate_account
from marginwatch.engine.types import (
    DEFAULT_MARGIN_CALL_RATIO,
    DEFAULT_WARNING_RATIO,
    Thresholds,
    Venue,
)
from marginwatch.producer.cli import add_arguments as add_producer_arguments
from marginwatch.producer.cli import positive_decimal

# The installed distribution, whose metadata gives ``--version``.
DISTRIBUTION = "marginwatch"
# The demo's defaults (``marginwatch.cli.demo`` imports Redis: not loaded for ``evaluate``).
DEMO_ACCOUNTS = 2_000
DEMO_METRICS_PORT_BASE = 9101
# A daemon's --loglevel: overrides MARGINWATCH_LOG_LEVEL.
LOGLEVEL_OPTION: dict[str, Any] = {
    "type": str.upper,
    "choices": LOG_LEVELS,
    "help": "default: MARGINWATCH_LOG_LEVEL",
}
# The commands that read no setting and never talk to Redis.
LOCAL_COMMANDS = ("evaluate", "schema")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marginwatch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version(DISTRIBUTION)}")
    commands = parser.add_subparsers(dest="command", required=True)
    evaluate = commands.add_parser("evaluate", help="evaluate a snapshot, print a JSON report")
    evaluate.add_argument("snapshot", help="snapshot JSON file, or - for stdin")
    evaluate.add_argument("--venue", choices=[venue.value for venue in Venue])
    evaluate.add_argument("--warning-ratio", type=positive_decimal, default=DEFAULT_WARNING_RATIO)
    evaluate.add_argument(
        "--margin-call-ratio", type=positive_decimal, default=DEFAULT_MARGIN_CALL_RATIO
    )
    evaluate.add_argument("--brackets", help="leverageBracket JSON file replacing the defaults")
    schema = commands.add_parser("schema", help="print the JSON Schema of a document")
    schema.add_argument("document", choices=["snapshot", "report"])
    accounts = commands.add_parser("accounts", help="manage the accounts held in Redis")
    accounts_commands = accounts.add_subparsers(dest="accounts_command", required=True)
    load = accounts_commands.add_parser(
        "load", help="store a snapshot's accounts, or accounts as JSON Lines, in Redis"
    )
    load.add_argument("snapshot", help="snapshot JSON or JSON Lines file, or - for stdin")
    load.add_argument(
        "--format", choices=LOAD_FORMATS, help="default: jsonl for *.jsonl or *.ndjson, else json"
    )
    worker = commands.add_parser("worker", help="run a partition worker")
    worker.add_argument("--partitions", required=True, help='e.g. "0-7" or "0,2,4"')
    worker.add_argument("--loglevel", **LOGLEVEL_OPTION)
    executor = commands.add_parser("executor", help="run the action executor")
    executor.add_argument("--partitions", help='the partitions served, e.g. "0-7" (default: all)')
    executor.add_argument("--loglevel", **LOGLEVEL_OPTION)
    executor.add_argument(
        "--queues",
        default="actions,webhooks",
        help="what to consume: actions (with the account-events applier), webhooks, or both",
    )
    producer = commands.add_parser("producer", help="publish mark-price ticks")
    add_producer_arguments(producer)
    _add_stress(commands)
    _add_replay(commands)
    status = commands.add_parser("status", help="live ratios and liquidation prices")
    status.add_argument("account", nargs="?", help="one account (default: the riskiest)")
    commands.add_parser(
        "migrate", help="move the keys of the layout without partition tags (daemons stopped)"
    )
    config = commands.add_parser("config", help="print the settings in force, secrets redacted")
    config.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    demo = commands.add_parser("demo", help="run the whole system on this machine")
    demo.add_argument("--accounts", type=int, default=DEMO_ACCOUNTS)
    demo.add_argument("--duration", type=float, default=None, help="seconds (default: Ctrl-C)")
    demo.add_argument(
        "--write-book",
        metavar="DIR",
        help="write the demo's book (demo-book.json) and crash (demo-crash.csv) there, and exit",
    )
    demo.add_argument(
        "--metrics-port-base",
        type=int,
        default=DEMO_METRICS_PORT_BASE,
        help="the children serve metrics on this port and the next three (0: none)",
    )
    return parser


def _add_stress(commands: Any) -> None:
    """``marginwatch stress``: its options as strings, read by ``base.stress_specs``."""
    stress = commands.add_parser("stress", help="the book under price shocks (live or a snapshot)")
    stress.add_argument(
        "--shock",
        action="append",
        metavar="SYMBOL:MOVE%",
        help="a shock of the scenario, repeatable: BTCUSDT:-20%%, '*:-10%%'",
    )
    stress.add_argument(
        "--grid",
        metavar="START%:STOP%:STEP%",
        help="one scenario per step on every symbol: -30%%:30%%:5%%",
    )
    stress.add_argument(
        "--beta",
        action="append",
        metavar="FILE|SYMBOL=BETA",
        help='betas to the base symbol: a JSON file {"ETHUSDT": 1.2} or ETHUSDT=1.2',
    )
    stress.add_argument("--beta-base", metavar="SYMBOL", help="default: the first --shock's")
    stress.add_argument("--snapshot", metavar="FILE", help="a snapshot instead of the live book")
    stress.add_argument(
        "--insurance-fund",
        metavar="AMOUNT",
        help=f"with --snapshot: the fund in USDT (default {SNAPSHOT_INSURANCE_FUND})",
    )
    stress.add_argument(
        "--impact",
        action="append",
        metavar="SYMBOL:MOVE%/DEPTH",
        help="rounds: a net forced sale of DEPTH USDT moves the mark MOVE%% (BTCUSDT:1%%/10000000)",
    )
    stress.add_argument(
        "--max-rounds",
        type=int,
        metavar="N",
        help=f"with --impact: the most rounds of a scenario (default {MAX_ROUNDS})",
    )
    stress.add_argument(
        "--adl-top",
        type=int,
        metavar="N",
        help=f"fund exhausted: how many of the first counterparties of ADL to show ({ADL_TOP})",
    )
    stress.add_argument(
        "--adl-symbols",
        type=int,
        metavar="N",
        help=f"fund exhausted: for how many symbols and sides to show them ({ADL_SYMBOLS})",
    )
    stress.add_argument("--json", action="store_true", help="the JSON document instead of a table")


def _add_replay(commands: Any) -> None:
    """``marginwatch replay``: a path of mark prices through a snapshot's book, offline."""
    replay = commands.add_parser(
        "replay", help="run a path of mark prices through a snapshot's book (no Redis)"
    )
    replay.add_argument(
        "--snapshot", metavar="BOOK.json", required=True, help="the book (the evaluate schema)"
    )
    replay.add_argument(
        "--ticks", metavar="PATH.csv", required=True, help="symbol,event_time,mark_price rows"
    )
    replay.add_argument(
        "--insurance-fund",
        metavar="AMOUNT",
        help=f"the fund in USDT before the path (default {SNAPSHOT_INSURANCE_FUND})",
    )
    replay.add_argument("--json", action="store_true", help="the JSON document instead of a table")


def _read(path: str, stdin: TextIO) -> str:
    if path == "-":
        return stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None


def _thresholds(args: argparse.Namespace) -> Thresholds:
    try:
        return Thresholds(args.warning_ratio, args.margin_call_ratio)
    except ValueError as error:
        raise InputError(f"--warning-ratio/--margin-call-ratio: {error}") from None


def run_evaluate(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``marginwatch evaluate``: snapshot in, report out."""
    thresholds = _thresholds(args)
    try:
        base = load_bracket_file(args.brackets) if args.brackets else None
        snapshot = parse_snapshot(_read(args.snapshot, stdin), base)
    except (SnapshotError, BracketTableError) as error:
        raise InputError(str(error)) from None
    except OSError as error:
        raise InputError(f"{args.brackets}: cannot read ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{args.brackets}: not valid JSON ({error})") from None
    venue = Venue(args.venue) if args.venue else snapshot.venue
    reports = [
        evaluate_account(account, snapshot.mark_prices, snapshot.tables, thresholds, venue)
        for account in snapshot.accounts
    ]
    ranked = AdlOut(ranked_among=AdlRanking.SNAPSHOT)
    stdout.write(render_report(reports, report_quantiles(reports), ranked).to_json() + "\n")


def run_schema(args: argparse.Namespace, stdout: TextIO) -> None:
    """``marginwatch schema``: the JSON Schema generated from the models."""
    model = SnapshotModel if args.document == "snapshot" else ReportModel
    stdout.write(json.dumps(model.model_json_schema(), indent=2) + "\n")


def _run_local(args: argparse.Namespace) -> int:
    """``evaluate`` and ``schema``: no settings, no Redis."""
    if args.command == "evaluate":
        run_evaluate(args, sys.stdin, sys.stdout)
    else:
        run_schema(args, sys.stdout)
    return EXIT_OK


def _run_service(args: argparse.Namespace, settings: Settings) -> int:
    """The commands that read settings; imported here to keep ``evaluate`` light."""
    if args.command == "config":
        return print_config(settings, sys.stdout, as_json=args.json)
    from marginwatch.cli.services import run  # noqa: PLC0415 (Redis and Celery only when needed)

    return run(args, settings, sys.stdin, sys.stdout, sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status. An error a user can cause
    is one line on stderr (``marginwatch.cli.errors``), never a traceback."""
    given = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(attach_negative_values(given))
    settings: Settings | None = None
    try:
        if args.command in LOCAL_COMMANDS:
            return _run_local(args)
        settings = read_settings()
        return _run_service(args, settings)
    except Exception as error:  # reported when a user can fix it, otherwise raised again
        found = report(error, settings.redis_url if settings else None)
        if found is None:
            raise
        print(f"marginwatch: {found.line}", file=sys.stderr)
        return found.status


if __name__ == "__main__":
    sys.exit(main())
