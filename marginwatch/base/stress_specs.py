"""The options of ``marginwatch stress``, read into scenarios and betas.

* ``--shock SYMBOL:MOVE%`` or ``--shock '*:MOVE%'`` (repeatable): the shocks of one scenario;
  a symbol's own shock overrides ``*``.
* ``--grid START%:STOP%:STEP%``: one scenario ``*:x`` per step, ``STOP`` included
  (``-30%:30%:5%`` is 13 scenarios).
* ``--beta FILE`` (a JSON object ``{"ETHUSDT": 1.2}``) or ``--beta SYMBOL=BETA`` (repeatable, a
  later one wins) with ``--beta-base SYMBOL``, else the first ``--shock``'s symbol.

* ``--insurance-fund AMOUNT``, with ``--snapshot`` only (the live fund is the sum of the
  partitions' ledgers).
* ``--impact SYMBOL:MOVE%/DEPTH`` or ``'*:MOVE%/DEPTH'`` (repeatable): a net forced sale of
  ``DEPTH`` USDT moves the mark down ``MOVE%`` (``engine.impact``); with it, each scenario runs
  rounds until nothing more liquidates, at most ``--max-rounds``.

Every rejection is a ``SpecError``: one line naming the option and the format it expects. The
command's defaults are here, all of them.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from marginwatch.base.snapshot import FieldError, decimal_json
from marginwatch.engine.impact import Impact, ImpactModel
from marginwatch.engine.scenarios import ALL, PERCENT, Betas, Scenario, Shock, grid

# The command's defaults.
TOP_CONTRIBUTORS = 10  # the largest contributors to a scenario's deficit, confirmed exactly
MAX_SCENARIOS = 1_000  # the most steps a --grid may take
SNAPSHOT_INSURANCE_FUND = Decimal(0)  # --insurance-fund when not given: a snapshot holds none
PROGRESS_EVERY_SECONDS = 1.0  # a progress line on stderr at most this often, the first after it
LIVE_CONSISTENCY = "one read per partition"  # how consistent a live book is (state.live_book)
SNAPSHOT_CONSISTENCY = "one snapshot"
MAX_ROUNDS = 20  # --max-rounds when not given: the most rounds of a scenario with --impact
ADL_TOP = 10  # --adl-top when not given: the counterparties ADL would take first, shown
ADL_SYMBOLS = 10  # --adl-symbols when not given: the symbols and sides whose counterparties show

SHOCK_FORMAT = "SYMBOL:MOVE% or *:MOVE%, e.g. BTCUSDT:-20% or '*:-10%'"
GRID_FORMAT = "START%:STOP%:STEP%, e.g. -30%:30%:5%"
BETA_FORMAT = 'a JSON file {"SYMBOL": beta} or SYMBOL=BETA, e.g. ETHUSDT=1.2'
IMPACT_FORMAT = "SYMBOL:MOVE%/DEPTH or *:MOVE%/DEPTH, e.g. BTCUSDT:1%/10000000"
_NUMBER = r"[+-]?\d+(?:\.\d+)?"
_SHOCK = re.compile(rf"(?P<symbol>[A-Za-z0-9]+|\*):(?P<move>{_NUMBER})%")
_GRID = re.compile(rf"(?P<start>{_NUMBER})%:(?P<stop>{_NUMBER})%:(?P<step>{_NUMBER})%")
_IMPACT = re.compile(
    r"(?P<symbol>[A-Za-z0-9]+|\*):(?P<move>\d+(?:\.\d+)?)%/(?P<depth>\d+(?:\.\d+)?)"
)
_INLINE_BETA = re.compile(rf"(?P<symbol>[A-Za-z0-9]+)=(?P<beta>{_NUMBER})")


# Options whose value may start with "-" (a negative move or amount): argparse takes a token
# such as "-30%:30%:5%" for an option of its own, but "--grid=-30%:30%:5%" as the value.
NEGATIVE_VALUE_OPTIONS = frozenset({"--shock", "--grid", "--insurance-fund"})
_NEGATIVE_VALUE = re.compile(r"-[0-9.]")


def attach_negative_values(argv: Sequence[str]) -> list[str]:
    """``argv`` with each negative value of ``NEGATIVE_VALUE_OPTIONS`` attached to its option
    (``--grid -30%:30%:5%`` → ``--grid=-30%:30%:5%``)."""
    attached: list[str] = []
    for token in argv:
        if attached and attached[-1] in NEGATIVE_VALUE_OPTIONS and _NEGATIVE_VALUE.match(token):
            attached[-1] = f"{attached[-1]}={token}"
        else:
            attached.append(token)
    return attached


class SpecError(ValueError):
    """An option that cannot be read; ``str()`` is one line naming it."""


@dataclass(frozen=True, slots=True)
class StressSpecs:
    """The options as given (strings), before they are read."""

    shocks: Sequence[str] = ()
    grid: str | None = None
    betas: Sequence[str] = ()
    beta_base: str | None = None
    insurance_fund: str | None = None
    impacts: Sequence[str] = ()
    max_rounds: int | None = None
    adl_top: int | None = None
    adl_symbols: int | None = None


def insurance_fund_of(specs: StressSpecs, snapshot: bool) -> Decimal:
    """``--insurance-fund``: a finite amount, for a snapshot only (default
    ``SNAPSHOT_INSURANCE_FUND``)."""
    if specs.insurance_fund is None:
        return SNAPSHOT_INSURANCE_FUND
    if not snapshot:
        raise SpecError("--insurance-fund: with --snapshot only (live: the partitions' ledgers)")
    try:
        amount = Decimal(specs.insurance_fund.strip())
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite():
        raise SpecError(f"--insurance-fund: {specs.insurance_fund!r}: expected USDT, e.g. 250000")
    return amount


def scenarios_of(specs: StressSpecs, symbols: Collection[str], limit: int) -> list[Scenario]:
    """The scenarios of ``--shock`` (one) or ``--grid`` (one per step, at most ``limit``)."""
    if specs.grid is not None and specs.shocks:
        raise SpecError("--grid: not with --shock (a grid step shocks every symbol)")
    if specs.grid is not None:
        return grid_scenarios(specs.grid, limit)
    if not specs.shocks:
        raise SpecError(f"--shock or --grid: give the scenarios, --shock {SHOCK_FORMAT}")
    return [Scenario.of(shocks_of(specs.shocks, symbols))]


def shocks_of(specs: Sequence[str], symbols: Collection[str] | None) -> list[Shock]:
    """Each ``--shock``, its symbol known (``symbols``; ``None``: not checked) and given once."""
    shocks = [parse_shock(spec) for spec in specs]
    seen: set[str] = set()
    for shock in shocks:
        if shock.symbol != ALL and symbols is not None and shock.symbol not in symbols:
            raise SpecError(f"--shock: {shock.symbol} has no bracket table")
        if shock.symbol in seen:
            raise SpecError(f"--shock: {shock.symbol} shocked twice")
        seen.add(shock.symbol)
    return shocks


def written_scenario(text: str, symbols: Collection[str] | None) -> Scenario:
    """A scenario written as it is named, its ``--shock`` specs separated by spaces
    (``BTCUSDT:-20% *:-10%``), read as ``--shock`` reads them."""
    specs = text.split()
    if not specs:
        raise SpecError(f"--shock: {text!r}: expected {SHOCK_FORMAT}")
    return Scenario.of(shocks_of(specs, symbols))


def spec_reason(error: SpecError) -> tuple[str, str]:
    """A rejection's option and its reason: ``("--shock", "'X': expected ...")``."""
    option, _colon, reason = str(error).partition(": ")
    return option, reason


def parse_shock(spec: str) -> Shock:
    """``SYMBOL:MOVE%`` (the symbol upper-cased) or ``*:MOVE%``, the move above −100%."""
    match = _SHOCK.fullmatch(spec.strip())
    if match is None:
        raise SpecError(f"--shock: {spec!r}: expected {SHOCK_FORMAT}")
    move = _percent(match["move"])
    if move <= -1:
        raise SpecError(f"--shock: {spec!r}: the move must be above -100%")
    return Shock(match["symbol"].upper(), move)


def grid_scenarios(spec: str, limit: int) -> list[Scenario]:
    """``START%:STOP%:STEP%``: ``START`` above −100% and at most ``STOP``, ``STEP`` positive,
    at most ``limit`` steps."""
    match = _GRID.fullmatch(spec.strip())
    if match is None:
        raise SpecError(f"--grid: {spec!r}: expected {GRID_FORMAT}")
    start, stop, step = (_percent(match[name]) for name in ("start", "stop", "step"))
    if step <= 0 or start > stop or start <= -1:
        raise SpecError(f"--grid: {spec!r}: expected START <= STOP, START above -100%, STEP > 0")
    if (stop - start) // step + 1 > limit:
        raise SpecError(f"--grid: {spec!r}: more than {limit} scenarios")
    return grid(start, stop, step)


def _percent(number: str) -> Decimal:
    """A percentage's number as a move: ``-20`` → ``-0.20``."""
    return Decimal(number).scaleb(-PERCENT)


def betas_of(specs: StressSpecs, symbols: Collection[str]) -> Betas | None:
    """The ``--beta`` options (``None`` without any) and their base."""
    if not specs.betas:
        if specs.beta_base is not None:
            raise SpecError("--beta-base: only with --beta")
        return None
    betas: dict[str, Decimal] = {}
    for spec in specs.betas:
        betas |= parse_beta(spec)
    base = beta_base(specs, symbols)
    if betas.get(base, Decimal(1)) != 1:
        raise SpecError(f"--beta: {base} is the base: its beta is 1, not {betas[base]}")
    return Betas(base, betas)


def beta_base(specs: StressSpecs, symbols: Collection[str]) -> str:
    """``--beta-base``, else the symbol of the first ``--shock`` (``*`` is no base)."""
    base = specs.beta_base.strip().upper() if specs.beta_base else None
    if base is None and specs.shocks:
        first = parse_shock(specs.shocks[0]).symbol
        base = None if first == ALL else first
    if base is None:
        raise SpecError("--beta-base: required when no --shock names a symbol first")
    if base not in symbols:
        raise SpecError(f"--beta-base: {base} has no bracket table")
    return base


def parse_beta(spec: str) -> dict[str, Decimal]:
    """``SYMBOL=BETA``, else the path of a JSON object of betas."""
    match = _INLINE_BETA.fullmatch(spec.strip())
    if match is not None:
        return {match["symbol"].upper(): Decimal(match["beta"])}
    try:
        text = Path(spec).read_text(encoding="utf-8")
    except OSError as error:
        reason = f"cannot read ({error.strerror})"
        raise SpecError(f"--beta: {spec}: {reason}; expected {BETA_FORMAT}") from None
    return beta_document(spec, text)


def beta_document(path: str, text: str) -> dict[str, Decimal]:
    """A JSON object of ``SYMBOL: beta`` (numbers or decimal strings)."""
    try:
        document = decimal_json(text, path)
    except FieldError as error:
        raise SpecError(f"--beta: {error}") from None
    if not isinstance(document, dict):
        raise SpecError(f"--beta: {path}: expected {BETA_FORMAT}")
    return {str(symbol).upper(): _beta(path, symbol, beta) for symbol, beta in document.items()}


def _beta(path: str, symbol: str, value: object) -> Decimal:
    """One beta of a file: a finite number."""
    try:
        beta = Decimal(str(value)) if isinstance(value, Decimal | str) else None
    except InvalidOperation:
        beta = None
    if beta is None or not beta.is_finite():
        raise SpecError(f"--beta: {path}: {symbol}: expected a number, not {value!r}")
    return beta


def impact_of(specs: StressSpecs, symbols: Collection[str]) -> ImpactModel | None:
    """The ``--impact`` options (``None`` without any), each symbol known and given once."""
    if not specs.impacts:
        if specs.max_rounds is not None:
            raise SpecError("--max-rounds: only with --impact")
        return None
    impacts: dict[str, Impact] = {}
    for spec in specs.impacts:
        symbol, impact = parse_impact(spec)
        if symbol != ALL and symbol not in symbols:
            raise SpecError(f"--impact: {symbol} has no bracket table")
        if symbol in impacts:
            raise SpecError(f"--impact: {symbol} given twice")
        impacts[symbol] = impact
    return ImpactModel(impacts)


def parse_impact(spec: str) -> tuple[str, Impact]:
    """``SYMBOL:MOVE%/DEPTH``: the move above 0% and below 100%, the depth positive."""
    match = _IMPACT.fullmatch(spec.strip())
    if match is None:
        raise SpecError(f"--impact: {spec!r}: expected {IMPACT_FORMAT}")
    move, depth = _percent(match["move"]), Decimal(match["depth"])
    if not 0 < move < 1 or depth <= 0:
        raise SpecError(f"--impact: {spec!r}: expected 0% < MOVE% < 100% and DEPTH > 0 USDT")
    return match["symbol"].upper(), Impact(move, depth)


def max_rounds_of(specs: StressSpecs) -> int:
    """``--max-rounds``: at least 1 (default ``MAX_ROUNDS``)."""
    rounds = MAX_ROUNDS if specs.max_rounds is None else specs.max_rounds
    if rounds < 1:
        raise SpecError(f"--max-rounds: {rounds}: expected at least 1")
    return rounds


def adl_symbols_of(specs: StressSpecs) -> int:
    """``--adl-symbols``: at least 0 (default ``ADL_SYMBOLS``)."""
    symbols = ADL_SYMBOLS if specs.adl_symbols is None else specs.adl_symbols
    if symbols < 0:
        raise SpecError(f"--adl-symbols: {symbols}: expected 0 or more")
    return symbols


def adl_top_of(specs: StressSpecs) -> int:
    """``--adl-top``: at least 0 (default ``ADL_TOP``)."""
    top = ADL_TOP if specs.adl_top is None else specs.adl_top
    if top < 0:
        raise SpecError(f"--adl-top: {top}: expected 0 or more")
    return top
