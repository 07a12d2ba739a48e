"""One stress scenario from the screen alone, in floats: the first round of
``engine.stress.run_scenario`` without its exact evaluations (no pool is decided exactly, no
contributor confirmed), for the partition workers' stress metrics (``worker.stress_metrics``).

Its statuses are the screen's, the uncertain pools' included (counted apart,
``pools_uncertain``): outside the float error band (``docs/engine.md``) a pool's status is the
exact one, and its deficit is within that band of its exact value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marginwatch.engine.batch import (
    BatchResult,
    Book,
    BracketArrays,
    FloatArray,
    IntArray,
    evaluate_ratios,
)
from marginwatch.engine.kernels import LIQUIDATION_CODE
from marginwatch.engine.stress import pool_deficits, row_sums
from marginwatch.engine.types import Thresholds


@dataclass(frozen=True)
class ScreenedScenario:
    """One scenario's figures from the screen alone, in floats."""

    pools_liquidated: int
    pools_uncertain: int  # pools whose status the screen could not decide
    deficit: float  # Σ max(0, −(wallet + Σ UPNL)) over the pools at liquidation
    liquidated_notional: FloatArray  # per symbol index: Σ |Q| × MP' of the pools at liquidation


def screen_scenario(
    book: Book,
    brackets: BracketArrays,
    row_pools: IntArray,
    floats: FloatArray,
    thresholds: Thresholds,
    out: BatchResult,
) -> ScreenedScenario:
    """The screen's figures at the shocked marks ``floats`` (per symbol index); ``row_pools``
    is ``batch.row_pool(book)``, ``out`` the screen's buffer."""
    evaluate_ratios(book, brackets, floats, thresholds, out)
    liquidated = out.status == LIQUIDATION_CODE
    notional, _net_sold = row_sums(book, row_pools, floats, liquidated)
    return ScreenedScenario(
        pools_liquidated=int(np.count_nonzero(liquidated)),
        pools_uncertain=int(np.count_nonzero(out.uncertain)),
        deficit=float(pool_deficits(book, out, liquidated).sum()),
        liquidated_notional=notional,
    )
