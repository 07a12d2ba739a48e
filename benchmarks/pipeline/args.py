"""The pipeline benchmark: arguments."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from benchmarks import naive_baseline as naive
from benchmarks import pipeline
from benchmarks.pipeline.config import DRAIN_TIMEOUT_S


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pipeline", description=pipeline.__doc__.split("\n")[0]
    )
    parser.add_argument("--accounts", type=int, default=200_000)
    parser.add_argument(
        "--engines",
        choices=("single", "cluster", "both"),
        default="single",
        help="single Redis; Redis Cluster 3+3 with RabbitMQ; or both, one after the other",
    )
    parser.add_argument(
        "--symbols",
        type=int,
        default=200,
        help="symbols ticking; past the shipped tables, synthetic ones (SYN0001USDT, ...) "
        "reuse their brackets",
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="producer run time")
    parser.add_argument("--partitions", type=int, default=8, help="P, split over 2 workers")
    parser.add_argument("--seed", type=int, default=1, help="market and book seed")
    parser.add_argument(
        "--positions-per-account", type=float, default=3.0, help="top-up target (0: none)"
    )
    parser.add_argument(
        "--executors",
        type=int,
        default=1,
        help="executor processes, each on its own partition range",
    )
    parser.add_argument(
        "--cascade",
        metavar="MOVE:SECONDS@START",
        help="every symbol moves MOVE%% over SECONDS from START (e.g. -15:10@20); replaces the "
        "staggered crashes",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=DRAIN_TIMEOUT_S,
        help="seconds to wait after the producer for every action to be done (a cascade may "
        "need minutes)",
    )
    parser.add_argument("--crash-move", type=float, default=-12.0, help="percent")
    parser.add_argument("--crash-seconds", type=float, default=30.0, help="each crash's length")
    parser.add_argument("--crash-every", type=float, default=10.0, help="seconds between starts")
    parser.add_argument("--crash-first", type=float, default=5.0, help="first crash start (s)")
    parser.add_argument(
        "--stress",
        metavar="SCENARIO",
        action="append",
        default=[],
        help="a stress scenario the workers compute (repeatable; its shocks space-separated, "
        "e.g. 'BTCUSDT:-20%% *:-10%%'): MARGINWATCH_STRESS_SCENARIOS; none: no stress",
    )
    parser.add_argument(
        "--stress-interval",
        type=float,
        default=30.0,
        help="MARGINWATCH_STRESS_INTERVAL_SECONDS with --stress",
    )
    parser.add_argument(
        "--py-spy", action="store_true", help="profile the daemons over the run (logs dir)"
    )
    parser.add_argument("--naive-seconds", type=float, default=30.0, help="0: skip baseline")
    parser.add_argument("--naive-max-backlog", type=int, default=naive.DEFAULT_MAX_BACKLOG)
    parser.add_argument(
        "--naive-prefetch", type=int, default=1, help="naive workers' prefetch (pipeline's: 1)"
    )
    return parser.parse_args(argv)
