"""What ``marginwatch stress`` prints: a table (a line per scenario) or the JSON document.

The document (``--json``)::

    {"read_at": ..., "newest_tick": ..., "consistent": "one read per partition",
     "read_seconds": "0.412", "scenario_seconds": "1.207",
     "scenarios": [{"name": "*:-20%", "shocks": {"BTCUSDT": "-0.20"},
                    "pools_margin_call": 3, "pools_liquidated": 2, "accounts_liquidated": 2,
                    "liquidated_notional": {"BTCUSDT": "80700.6"}, "deficit": "5.6",
                    "insurance_fund": "1000", "fund_exhausted": false,
                    "largest_contributors": [{"account_id": ..., "pool": "cross", ...}]}]}

With ``--impact`` each scenario also has ``"converged"`` and ``"rounds"``: per round its
``number``, the ``moves`` and ``marks`` of the symbols the round before moved (none in the
first), ``pools_liquidated`` (newly), ``liquidated_notional`` and ``net_forced_sale`` per
symbol, and ``deficit`` (the screen's, to the cent).

When a scenario's deficit exhausts the fund, it also has ``"deleveraged"`` (``engine.stress_adl``):
per symbol and side of the bankrupt positions, ``symbol``, ``bankrupt_side``,
``bankrupt_quantity``, the estimated ``quantity`` to deleverage, how many ``counterparties``
are ranked, how many fill the quantity (``filled_by``), what they cannot (``unfilled``), and the
``top`` counterparties, highest LeveragePnl first: ``account_id``, ``pool``, ``position_side``,
``quantity`` (signed), ``leverage_pnl``, ``adl_quantile`` and the quantity ``taken``.

Counts are integers, money, quantities and moves decimal strings: moves exactly as given
(``-0.20``; ``0`` when unmoved), money and quantities as the evaluation report writes them
(``base.report.decimal_string``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from marginwatch.base.pools import CROSS_POOL, isolated_pool
from marginwatch.base.report import decimal_string
from marginwatch.engine.stress import ExactPool, Round, ScenarioOutcome, fund_exhausted
from marginwatch.engine.stress_adl import Counterparty, Deleveraging

SECONDS_FORMAT = ".3f"
_COLUMNS = (
    ("scenario", "<24"),
    ("margin call", ">11"),
    ("liquidated", ">10"),
    ("accounts", ">8"),
    ("liquidated notional", ">19"),
    ("deficit", ">16"),
    ("fund exhausted", ">14"),
)


@dataclass(frozen=True)
class StressRun:
    """How the book was read and how long the run took; ``newest_tick``: ``None`` for a
    snapshot."""

    read_at: str
    newest_tick: str | None
    consistent: str
    read_seconds: float
    scenario_seconds: float
    fund: Decimal
    accounts: int
    pools: int
    positions: int
    rounds: bool = False  # whether the scenarios ran rounds (--impact)


def money(value: Decimal) -> str:
    """A money amount as the report writes it (cut toward zero to 8 decimals)."""
    text = decimal_string(value)
    assert text is not None  # a value gives a string
    return text


def move_text(move: Decimal) -> str:
    """A move as given (``-0.20``); ``0`` for an unmoved symbol, whatever its exponent."""
    return f"{move:f}" if move else "0"


def stress_document(run: StressRun, outcomes: Sequence[ScenarioOutcome]) -> dict[str, Any]:
    """The ``--json`` document (the module docstring's contract)."""
    return {
        "read_at": run.read_at,
        "newest_tick": run.newest_tick,
        "consistent": run.consistent,
        "read_seconds": format(run.read_seconds, SECONDS_FORMAT),
        "scenario_seconds": format(run.scenario_seconds, SECONDS_FORMAT),
        "scenarios": [scenario_entry(outcome, run) for outcome in outcomes],
    }


def scenario_entry(outcome: ScenarioOutcome, run: StressRun) -> dict[str, Any]:
    """One scenario's entry, with its rounds when the run has them, and who ADL takes when
    the fund is exhausted."""
    entry = scenario_document(outcome, run.fund)
    if run.rounds:
        entry["converged"] = outcome.converged
        entry["rounds"] = [round_document(found) for found in outcome.rounds]
    if outcome.deleveraged:
        entry["deleveraged"] = [deleveraging_document(found) for found in outcome.deleveraged]
    return entry


def round_document(found: Round) -> dict[str, Any]:
    """One round of a scenario."""
    return {
        "number": found.number,
        "moves": {s: money(move) for s, move in sorted(found.moves.items())},
        "marks": {s: money(found.marks[s]) for s in sorted(found.moves)},
        "pools_liquidated": found.pools_liquidated,
        "liquidated_notional": {s: money(v) for s, v in sorted(found.liquidated_notional.items())},
        "net_forced_sale": {s: money(v) for s, v in sorted(found.net_sold.items())},
        "deficit": money(found.deficit),
    }


def scenario_document(outcome: ScenarioOutcome, fund: Decimal) -> dict[str, Any]:
    """One scenario's entry."""
    return {
        "name": outcome.scenario.name,
        "shocks": {symbol: move_text(move) for symbol, move in sorted(outcome.moves.items())},
        "pools_margin_call": outcome.pools_margin_call,
        "pools_liquidated": outcome.pools_liquidated,
        "accounts_liquidated": outcome.accounts_liquidated,
        "liquidated_notional": {
            s: money(v) for s, v in sorted(outcome.liquidated_notional.items())
        },
        "deficit": money(outcome.deficit),
        "insurance_fund": money(fund),
        "fund_exhausted": fund_exhausted(outcome.deficit, fund),
        "largest_contributors": [contributor_document(found) for found in outcome.contributors],
    }


def contributor_document(found: ExactPool) -> dict[str, Any]:
    """One of the largest contributors, exactly."""
    report = found.report
    return {
        "account_id": found.account.account_id,
        "pool": pool_name(found),
        "status": report.status.value,
        "wallet_balance": money(report.wallet_balance),
        "unrealized_pnl": money(report.unrealized_pnl),
        "margin_balance": money(report.margin_balance),
        "notional": money(found.notional),
        "deficit": money(found.deficit),
    }


def deleveraging_document(found: Deleveraging) -> dict[str, Any]:
    """What ADL takes for one symbol and bankrupt side."""
    return {
        "symbol": found.symbol,
        "bankrupt_side": found.bankrupt_side.value,
        "bankrupt_quantity": money(found.bankrupt_quantity),
        "quantity": money(found.quantity),
        "counterparties": found.counterparties,
        "filled_by": found.filled_by,
        "unfilled": money(found.unfilled),
        "top": [counterparty_document(c) for c in found.top],
    }


def counterparty_document(found: Counterparty) -> dict[str, Any]:
    """One counterparty ADL takes, exactly."""
    position = found.position
    return {
        "account_id": found.account.account_id,
        "pool": isolated_pool(position) if position.is_isolated else CROSS_POOL,
        "position_side": position.position_side.value,
        "quantity": money(position.quantity),
        "leverage_pnl": money(found.leverage_pnl),
        "adl_quantile": found.quantile,
        "taken": money(found.taken),
    }


def pool_name(found: ExactPool) -> str:
    """``cross`` or ``isolated:SYMBOL:SIDE``."""
    return isolated_pool(found.positions[0]) if found.isolated else CROSS_POOL


def stress_table(run: StressRun, outcomes: Sequence[ScenarioOutcome]) -> str:
    """The book, a line per scenario, the times, and the worst scenario's contributors."""
    lines = [book_line(run), "", _row([name for name, _ in _COLUMNS])]
    lines += [_row(scenario_cells(outcome, run.fund)) for outcome in outcomes]
    seconds = format(run.scenario_seconds, SECONDS_FORMAT)
    lines += ["", f"read the book in {format(run.read_seconds, SECONDS_FORMAT)} s; "
              f"ran {len(outcomes)} scenarios in {seconds} s"]  # fmt: skip
    rounds = round_lines(outcomes) if run.rounds else []
    tail = contributor_lines(outcomes) + deleveraged_lines(outcomes)
    return "\n".join(lines + rounds + tail) + "\n"


def book_line(run: StressRun) -> str:
    """What was read, how consistently, with which marks and fund."""
    marks = f"newest tick {run.newest_tick}" if run.newest_tick else "the snapshot's marks"
    return (
        f"book: {run.accounts:,} accounts, {run.pools:,} pools, {run.positions:,} positions "
        f"({run.consistent}, read at {run.read_at}); {marks}; "
        f"insurance fund {format(run.fund, ',')} USDT"
    )


def scenario_cells(outcome: ScenarioOutcome, fund: Decimal) -> list[str]:
    """One scenario's cells, in ``_COLUMNS`` order."""
    notional = sum(outcome.liquidated_notional.values(), Decimal(0))
    return [
        outcome.scenario.name,
        f"{outcome.pools_margin_call:,}",
        f"{outcome.pools_liquidated:,}",
        f"{outcome.accounts_liquidated:,}",
        format(notional, ",.2f"),
        format(outcome.deficit, ",.2f"),
        "yes" if fund_exhausted(outcome.deficit, fund) else "no",
    ]


def _row(cells: Sequence[str]) -> str:
    return "  ".join(format(cell, spec) for cell, (_, spec) in zip(cells, _COLUMNS, strict=True))


def contributor_lines(outcomes: Sequence[ScenarioOutcome]) -> list[str]:
    """The largest contributors of the scenario of the largest deficit (none without one)."""
    worst = max(outcomes, key=lambda outcome: outcome.deficit, default=None)
    if worst is None or not worst.contributors:
        return []
    lines = ["", f"largest contributors to the deficit of {worst.scenario.name} (exact):"]
    for found in worst.contributors:
        lines.append(
            f"  {found.account.account_id:<24} {pool_name(found):<28} "
            f"margin balance {money(found.report.margin_balance):>18}  "
            f"deficit {money(found.deficit):>16}"
        )
    return lines


def round_lines(outcomes: Sequence[ScenarioOutcome]) -> list[str]:
    """Each scenario's rounds: what each liquidated, after which moves of the marks."""
    lines = []
    for outcome in outcomes:
        ending = "" if outcome.converged else " (stopped at --max-rounds)"
        lines += ["", f"rounds of {outcome.scenario.name}{ending}:"]
        lines += [f"  {round_line(found)}" for found in outcome.rounds]
    return lines


def round_line(found: Round) -> str:
    """``round 2 after BTCUSDT -3.1235%: pools liquidated 5, notional 1,234.00, deficit 12.00``."""
    moved = ", ".join(f"{s} {move_percent(m)}" for s, m in sorted(found.moves.items()))
    after = f" after {moved}" if moved else ""
    notional = sum(found.liquidated_notional.values(), Decimal(0))
    return (
        f"round {found.number}{after}: pools liquidated {found.pools_liquidated:,}, "
        f"notional {notional:,.2f}, deficit {found.deficit:,.2f}"
    )


def move_percent(move: Decimal) -> str:
    """A move as a signed percentage to four decimals: ``-0.03123456`` → ``-3.1235%``."""
    return f"{move * 100:+.4f}%"


def deleveraged_lines(outcomes: Sequence[ScenarioOutcome]) -> list[str]:
    """Who ADL takes in the scenario of the largest deficit, if it exhausts the fund."""
    worst = max(outcomes, key=lambda outcome: outcome.deficit, default=None)
    if worst is None or not worst.deleveraged:
        return []
    lines = ["", f"deleveraged in {worst.scenario.name} (fund exhausted; quantities estimated):"]
    shown = [found for found in worst.deleveraged if found.detailed]
    for found in shown:
        lines += [
            f"  {deleveraging_line(found)}",
            *(f"    {counterparty_line(c)}" for c in found.top),
        ]
    others = len(worst.deleveraged) - len(shown)
    if others:
        lines.append(f"  and {others:,} more symbols and sides (--json lists every one)")
    return lines


def deleveraging_line(found: Deleveraging) -> str:
    """``BTCUSDT LONG bankrupt 1.1: 0.55 from 3 SHORT positions, filled by 2``."""
    side = found.bankrupt_side.value
    opposite = "SHORT" if side == "LONG" else "LONG"
    unfilled = f", {money(found.unfilled)} unfilled" if found.unfilled else ""
    return (
        f"{found.symbol} {side} bankrupt {money(found.bankrupt_quantity)}: "
        f"{money(found.quantity)} from {found.counterparties:,} {opposite} positions, "
        f"filled by {found.filled_by:,}{unfilled}"
    )


def counterparty_line(found: Counterparty) -> str:
    """``acct-1  cross  quantity -0.5  LeveragePnl 0.02  quantile 1  takes 0.15``."""
    document = counterparty_document(found)
    return (
        f"{document['account_id']:<24} {document['pool']:<28} quantity {document['quantity']:>14}"
        f"  LeveragePnl {document['leverage_pnl']:>12}  quantile {found.quantile}"
        f"  takes {document['taken']}"
    )
