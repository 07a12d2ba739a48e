"""The stress scenarios the partition workers export as metrics, read from the settings.

``MARGINWATCH_STRESS_SCENARIOS`` is a JSON list of scenarios, each written as
``marginwatch stress`` names it: its ``--shock`` specs separated by spaces (``BTCUSDT:-20%
*:-10%``). ``MARGINWATCH_STRESS_BETAS_FILE`` (a ``--beta`` file) with
``MARGINWATCH_STRESS_BETA_BASE`` moves symbols with the base, as ``--beta`` does
(``engine.scenarios``). The settings check the scenarios' syntax as they are read; the worker
reads the rest at start-up (``stress_plan``), against the bracket tables in force, so that a
symbol without a table, an unreadable betas file or a beta taking a mark to zero stops it with a
message naming the setting.

Every symbol's move is known once the scenarios are read (it depends on no mark), so a scenario
is kept as one factor ``1 + move`` per symbol: its shocked marks are the marks times it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from marginwatch.base.settings import ConfigurationError, Settings, env_name
from marginwatch.base.stress_specs import (
    SpecError,
    StressSpecs,
    betas_of,
    spec_reason,
    written_scenario,
)
from marginwatch.engine.scenarios import ALL, ONE, Betas, Scenario, ScenarioError, moves
from marginwatch.engine.types import Thresholds

# The setting each option of ``marginwatch stress`` stands for here.
OPTION_SETTINGS = {
    "--shock": "stress_scenarios",
    "--beta": "stress_betas_file",
    "--beta-base": "stress_beta_base",
}


@dataclass(frozen=True)
class StressPlan:
    """The configured scenarios over books laid out in ``symbols`` order."""

    scenarios: tuple[Scenario, ...]
    factors: npt.NDArray[np.float64]  # [scenario, symbol index]: 1 + the symbol's move
    named: tuple[int, ...]  # indices of the symbols some scenario names (the symbol labels)
    symbols: tuple[str, ...]
    interval_seconds: float
    thresholds: Thresholds

    @property
    def names(self) -> list[str]:
        """The scenarios' names: the values of the ``scenario`` label."""
        return [scenario.name for scenario in self.scenarios]


def stress_plan(settings: Settings, symbols: Sequence[str]) -> StressPlan | None:
    """The settings' scenarios over ``symbols`` (``None``: none configured); a setting that
    cannot be used raises ``ConfigurationError`` naming it."""
    if not settings.stress_scenarios:
        return None
    try:
        scenarios = [written_scenario(text, symbols) for text in settings.stress_scenarios]
        betas = configured_betas(settings, symbols)
        factors = [scenario_factors(scenario, symbols, betas) for scenario in scenarios]
    except SpecError as error:
        option, reason = spec_reason(error)
        raise ConfigurationError(f"{env_name(OPTION_SETTINGS[option])}: {reason}") from None
    except ScenarioError as error:
        raise ConfigurationError(f"{env_name('stress_betas_file')}: {error}") from None
    named = {symbols.index(s) for scenario in scenarios for s in scenario.shocks if s != ALL}
    return StressPlan(
        scenarios=tuple(scenarios),
        factors=np.array(factors, dtype=np.float64),
        named=tuple(sorted(named)),
        symbols=tuple(symbols),
        interval_seconds=settings.stress_interval_seconds,
        thresholds=settings.thresholds,
    )


def configured_betas(settings: Settings, symbols: Sequence[str]) -> Betas | None:
    """The betas of ``MARGINWATCH_STRESS_BETAS_FILE`` to ``MARGINWATCH_STRESS_BETA_BASE``."""
    path, base = settings.stress_betas_file, settings.stress_beta_base
    if path and not base:
        needed = f"required with {env_name('stress_betas_file')}"
        raise ConfigurationError(f"{env_name('stress_beta_base')}: {needed}")
    return betas_of(StressSpecs(betas=[path] if path else (), beta_base=base), symbols)


def scenario_factors(
    scenario: Scenario, symbols: Sequence[str], betas: Betas | None
) -> list[float]:
    """``1 + move`` of each symbol, in ``symbols`` order."""
    by_symbol = moves(scenario, symbols, betas)
    return [float(ONE + by_symbol[symbol]) for symbol in symbols]
