"""The pipeline benchmark: its constants and progress log."""

from __future__ import annotations

import os
import time
from pathlib import Path

from marginwatch.base import metrics, stress_metrics

WORKERS = 2
# The state Redis persists as docker-compose.yml deploys it (the cluster's nodes do not).
AOF_AS_DEPLOYED = ("--appendonly", "yes", "--appendfsync", "everysec")
GOAL_P99_MS = 50.0  # tick -> MARGIN_CALL
GOAL_LIQUIDATION_P99_MS = 250.0  # tick -> liquidation executed
GOAL_CASCADE_LIQUIDATION_P99_MS = 10_000.0  # the same through a --cascade
GOAL_CASCADE_LIQUIDATIONS_PER_SECOND = 25_000
FIRST_EVALUATION_TIMEOUT_S = 900.0
DRAIN_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
POSITIONS_METRIC = metrics.POSITIONS_EVALUATED
EVALUATIONS_METRIC = metrics.EVALUATIONS
DURATION_METRIC = metrics.EVALUATION_DURATION
TICK_AGE_METRIC = metrics.TICK_AGE
STRESS_DURATION_METRIC = stress_metrics.STRESS_DURATION
HISTOGRAMS = (DURATION_METRIC, TICK_AGE_METRIC, STRESS_DURATION_METRIC)
SCRAPED = (
    POSITIONS_METRIC,
    EVALUATIONS_METRIC,
    *(f"{name}_{part}" for name in HISTOGRAMS for part in ("sum", "count")),
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NAIVE_SCRIPT = Path(__file__).resolve().parents[1] / "naive_baseline.py"
# The bracket tables of the run's symbols, in its directory, named by MARGINWATCH_BRACKETS_FILE.
BRACKETS = "brackets.json"


def log(message: str) -> None:
    """A progress line, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
