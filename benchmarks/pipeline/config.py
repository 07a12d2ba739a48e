"""The pipeline benchmark: its constants and progress log."""

from __future__ import annotations

import os
import time
from pathlib import Path

from marginwatch.base import metrics
from marginwatch.runtime import celery_app
from marginwatch.runtime.celery_app import WEBHOOKS_QUEUE

WORKERS = 2
GOAL_P99_MS = 250.0
FIRST_EVALUATION_TIMEOUT_S = 900.0
DRAIN_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
POSITIONS_METRIC = metrics.POSITIONS_EVALUATED
EVALUATIONS_METRIC = metrics.EVALUATIONS
DURATION_METRIC = metrics.EVALUATION_DURATION
TICK_AGE_METRIC = metrics.TICK_AGE
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
NAIVE_SCRIPT = Path(__file__).resolve().parents[1] / "naive_baseline.py"


def log(message: str) -> None:
    """A progress line, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
