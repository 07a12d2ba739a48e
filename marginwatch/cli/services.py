"""The commands that read settings: ``accounts load``, ``worker``, ``executor``, ``producer``,
``status``, ``stress``, ``replay``, ``migrate`` and ``demo``, given the settings
``marginwatch.cli.main`` read once. Errors are reported there."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from marginwatch.base.exits import EXIT_OK
from marginwatch.base.partitions import parse_partitions
from marginwatch.base.settings import ConfigurationError, Settings, bracket_tables, redis_url
from marginwatch.cli.logs import configure_logging
from marginwatch.state.accounts import ensure_partition_count
from marginwatch.state.connection import open_redis


def run(
    args: argparse.Namespace, settings: Settings, stdin: TextIO, stdout: TextIO, stderr: TextIO
) -> int:
    """Run one command with ``settings``. Each daemon's package is imported only by its own
    command (hence the local imports)."""
    command = args.command
    if command == "accounts":
        from marginwatch.cli.accounts_load import LoadRequest, load_accounts  # noqa: PLC0415 (only this command)

        request = LoadRequest(args.snapshot, args.format, stdin, stdout, stderr)
        return load_accounts(settings, request)
    if command == "worker":
        from marginwatch.worker.daemon import run_worker  # noqa: PLC0415 (only this command)

        partitions = parse_partitions(args.partitions, settings.partitions)
        configure_logging(settings, "worker", partitions, args.loglevel)
        run_worker(settings, args.partitions)
    elif command == "executor":
        from marginwatch.executor.daemon import parse_roles, run_executor  # noqa: PLC0415 (only this command)

        served = parse_partitions(
            args.partitions or f"0-{settings.partitions - 1}", settings.partitions
        )
        configure_logging(settings, "executor", served, args.loglevel)
        run_executor(settings, parse_roles(args.queues), served)
    elif command == "producer":
        from marginwatch.producer.cli import run as run_producer  # noqa: PLC0415 (only this command)

        configure_logging(settings, "producer")
        return run_producer(args, settings, set(bracket_tables(settings)))
    elif command == "migrate":
        return migrate_keys(settings, stdout)
    elif command in {"status", "stress", "replay"}:
        return report_command(args, settings, stdout, stderr)
    elif command == "demo":
        return demo_command(args, settings, stdout)
    return EXIT_OK


def demo_command(args: argparse.Namespace, settings: Settings, stdout: TextIO) -> int:
    """Run the demo, or (``--write-book DIR``) write its book and crash as files."""
    if args.write_book is not None:
        from marginwatch.cli.demo_book import write_demo_book  # noqa: PLC0415 (only this)

        for path in write_demo_book(Path(args.write_book), args.accounts):
            stdout.write(f"wrote {path}\n")
        return EXIT_OK
    from marginwatch.cli.demo import run_demo  # noqa: PLC0415 (only this command)

    return run_demo(settings, args.accounts, args.duration, stdout, args.metrics_port_base)


def report_command(
    args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO
) -> int:
    """``status``, ``stress`` or ``replay``: commands that read the book and print a report."""
    if args.command == "status":
        from marginwatch.cli.status import print_status  # noqa: PLC0415 (only this command)

        return print_status(settings, args.account, stdout)
    if args.command == "replay":
        from marginwatch.cli.replay import run_replay  # noqa: PLC0415 (only this command)

        return run_replay(args, settings, stdout, stderr)
    from marginwatch.cli.stress import run_stress  # noqa: PLC0415 (only this command)

    return run_stress(args, settings, stdout, stderr)


def migrate_keys(settings: Settings, stdout: TextIO) -> int:
    """``marginwatch migrate``: the legacy layout's keys into the partition-scoped one."""
    from marginwatch.state.migrate import MigrationRefusedError, migrate  # noqa: PLC0415 (only this command)

    client = open_redis(redis_url(settings))
    ensure_partition_count(client, settings.partitions)
    try:
        report = migrate(client, settings.partitions)
    except MigrationRefusedError as error:
        raise ConfigurationError(str(error)) from None
    stdout.write("".join(f"{line}\n" for line in report.lines()))
    return EXIT_OK
