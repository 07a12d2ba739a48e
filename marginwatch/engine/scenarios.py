"""Stress scenarios: shocks on mark prices, betas, and the shocked marks they give.

A *move* is relative: ``-0.20`` is −20%. A shocked mark is ``MP' = MP × (1 + move)``, and every
move is above −1 so that every shocked mark stays positive. A scenario holds at most one shock
per symbol, and ``*`` (``ALL``) for every symbol without its own.

Betas move symbols with a *base* symbol: the move of a symbol ``s`` in a scenario is, in this
order of precedence,

1. its own shock, when the scenario names ``s``;
2. ``beta(s) × move(base)``, when ``s`` has a beta (``move(base)``: the base's own shock, else
   the ``*`` shock, else 0; the base is never moved by a beta of its own);
3. the ``*`` shock;
4. 0: the mark stays.

A grid step ``x`` is the scenario ``*:x``: with betas, a symbol with a beta moves
``beta × x`` and every other symbol moves ``x``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

ALL = "*"
ONE = Decimal(1)
PERCENT = 2  # a percentage's decimal exponent: 20% is 20 × 10⁻²


class ScenarioError(ValueError):
    """A scenario whose moves would take a mark to zero or below; the message says which."""


@dataclass(frozen=True, slots=True)
class Shock:
    """``symbol`` (or ``ALL``) moves by ``move`` (``-0.20``: −20%)."""

    symbol: str
    move: Decimal

    @property
    def name(self) -> str:
        """``SYMBOL:MOVE%``, as the shock is written: ``BTCUSDT:-20%``, ``*:+5%``."""
        return f"{self.symbol}:{percent(self.move)}"


@dataclass(frozen=True, slots=True)
class Betas:
    """Each symbol's beta to ``base``: a move ``m`` of the base moves it ``beta × m``."""

    base: str
    of: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    """Named shocks: one per symbol at most, ``ALL`` for the others."""

    name: str
    shocks: Mapping[str, Decimal]

    @classmethod
    def of(cls, shocks: Sequence[Shock]) -> Scenario:
        """The scenario of ``shocks``, named by them in order (``BTCUSDT:-20% *:-10%``)."""
        return cls(" ".join(shock.name for shock in shocks), {s.symbol: s.move for s in shocks})


def percent(move: Decimal) -> str:
    """A move as a signed percentage without trailing zeros: ``-0.20`` → ``-20%``, ``0.05`` →
    ``+5%``, ``0`` → ``0%``."""
    number = f"{abs(move).scaleb(PERCENT).normalize():f}"
    sign = "+" if move > 0 else "-" if move < 0 else ""
    return f"{sign}{number}%"


def grid(start: Decimal, stop: Decimal, step: Decimal) -> list[Scenario]:
    """One scenario per step, ``*:x`` for ``x = start + k × step`` up to ``stop`` inclusive
    (``step > 0``): ``(stop − start) // step + 1`` scenarios."""
    count = int((stop - start) // step) + 1
    return [Scenario.of([Shock(ALL, start + k * step)]) for k in range(count)]


def base_move(scenario: Scenario, betas: Betas) -> Decimal:
    """The base's move: its own shock, else the ``*`` shock, else 0."""
    return scenario.shocks.get(betas.base, scenario.shocks.get(ALL, Decimal(0)))


def move_of(scenario: Scenario, symbol: str, betas: Betas | None) -> Decimal:
    """A symbol's move: its own shock; else ``beta × move(base)`` when it has a beta; else the
    ``*`` shock; else 0 (the precedence of the module docstring)."""
    if symbol in scenario.shocks:
        return scenario.shocks[symbol]
    if betas is not None and symbol in betas.of and symbol != betas.base:
        return betas.of[symbol] * base_move(scenario, betas)
    return scenario.shocks.get(ALL, Decimal(0))


def moves(scenario: Scenario, symbols: Iterable[str], betas: Betas | None) -> dict[str, Decimal]:
    """The move of each of ``symbols``; ``ScenarioError`` when one is at or below −100%."""
    found = {symbol: move_of(scenario, symbol, betas) for symbol in symbols}
    for symbol, move in found.items():
        if move <= -ONE:
            raise ScenarioError(_too_far(scenario, symbol, move, betas))
    return found


def _too_far(scenario: Scenario, symbol: str, move: Decimal, betas: Betas | None) -> str:
    """Why ``symbol`` cannot move ``move`` (only a beta takes a move that far)."""
    cause = ""
    if betas is not None and symbol in betas.of:
        base = percent(base_move(scenario, betas))
        cause = f" (beta {betas.of[symbol]} × {betas.base} {base})"
    moved = f"{symbol} would move {percent(move)}{cause}"
    return f"scenario {scenario.name}: {moved}; a mark must stay positive"


def shocked_marks(
    marks: Mapping[str, Decimal], by_symbol: Mapping[str, Decimal]
) -> dict[str, Decimal]:
    """Every mark shocked: ``MP' = MP × (1 + move)``, ``move`` from ``by_symbol`` (0 if absent)."""
    return {
        symbol: mark * (ONE + by_symbol.get(symbol, Decimal(0))) for symbol, mark in marks.items()
    }
