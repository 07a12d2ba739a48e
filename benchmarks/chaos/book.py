"""The chaos run's book and price path, and what must happen, computed here on its own.

Cohorts of identical accounts, each designed for one story along the held levels (BTC / ETH):
L1 48,950 / 2,500, L2 49,500 / 2,500, L3 48,950 / 2,500, L4 48,000 / 2,300 (L0 50,000 / 2,500).

* ``A`` cross long 1 BTC @ 50,000, wallet 1,265: margin call (195.8 / 215), resolved (198 /
  765), second margin call, bankrupt at L4 (deficit 735);
* ``C`` the same position isolated (wallet 1,265) beside a cross wallet of 100 that must stay
  100 (an isolated deficit is never the cross wallet's);
* ``E`` cross BTC 1 + ETH 10 @ 2,500, wallet 1,400: A's story on two symbols (deficit 2,600);
* ``F`` cross ETH 10, wallet 2,110: healthy until its one margin call at L4 (92 / 110);
* ``H`` cross BTC 1, wallet 2,150: straight from healthy to liquidation at L4 with equity left
  (150 of the 600 clearance fee goes to the fund); its margin call at L4 may be overtaken by
  its liquidation (another executor), so it is sent at most once;
* ``B`` cross BTC 1, wallet 5,000, and ``G`` isolated short ETH 10 @ 2,400: never touched;
  B also receives valid deposits.

The expectation below is this module's own arithmetic (maintenance margin from the bracket
rows, ``ratio = MM / (wallet + uPnL)``, the episode rules, the closeout), not marginwatch's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.types import Account, MarginMode, Position, PositionSide

D = Decimal
LEVELS: tuple[dict[str, Decimal], ...] = (
    {"BTCUSDT": D(50_000), "ETHUSDT": D(2_500)},
    {"BTCUSDT": D(48_950), "ETHUSDT": D(2_500)},
    {"BTCUSDT": D(49_500), "ETHUSDT": D(2_500)},
    {"BTCUSDT": D(48_950), "ETHUSDT": D(2_500)},
    {"BTCUSDT": D(48_000), "ETHUSDT": D(2_300)},
)
MARGIN_CALL_RATIO, REARM_BELOW, FEE_RATE = D("0.8"), D("0.75"), D("0.0125")
COHORTS = "ABCEFGH"
FUND = D(10_000_000)  # the insurance fund at the start
KINDS = ("margin_call", "resolved", "liquidation")


def _long(symbol: str, quantity: int, entry: int, wallet: int | None = None) -> Position:
    mode = MarginMode.CROSS if wallet is None else MarginMode.ISOLATED
    return Position(symbol, D(quantity), D(entry), 20, mode,
                    isolated_wallet=None if wallet is None else D(wallet))  # fmt: skip


def cohort_account(cohort: str, account_id: str) -> Account:
    """One account of ``cohort`` (see the module docstring)."""
    btc, eth = _long("BTCUSDT", 1, 50_000), _long("ETHUSDT", 10, 2_500)
    shapes: dict[str, tuple[int, tuple[Position, ...]]] = {
        "A": (1_265, (btc,)),
        "B": (5_000, (btc,)),
        "C": (100, (_long("BTCUSDT", 1, 50_000, wallet=1_265),)),
        "E": (1_400, (btc, eth)),
        "F": (2_110, (eth,)),
        "G": (50, (_long("ETHUSDT", -10, 2_400, wallet=1_300),)),
        "H": (2_150, (btc,)),
    }
    wallet, positions = shapes[cohort]
    return Account(account_id, D(wallet), positions)


def book(per_cohort: int) -> list[Account]:
    """``per_cohort`` accounts of every cohort, named ``{cohort}{n}``."""
    return [cohort_account(c, f"{c}{n}") for c in COHORTS for n in range(per_cohort)]


def maintenance_margin(position: Position, mark: Decimal, table: BracketTable) -> Decimal:
    """``|Q| × mark × rate − amount`` of the bracket row holding the notional."""
    notional = abs(position.quantity) * mark
    row = next(r for r in table.brackets if r.notional_floor <= notional < r.notional_cap)
    return notional * row.maintenance_margin_rate - row.maintenance_amount


def pools(account: Account) -> dict[str, tuple[Decimal, list[Position]]]:
    """Pool name -> (wallet, positions): the cross pool if it holds a position, each isolated
    position alone."""
    found: dict[str, tuple[Decimal, list[Position]]] = {}
    cross = [p for p in account.positions if p.margin_mode is MarginMode.CROSS]
    if cross:
        found["cross"] = (account.cross_wallet_balance, cross)
    for p in account.positions:
        if p.margin_mode is MarginMode.ISOLATED:
            side = PositionSide.BOTH.value
            found[f"isolated:{p.symbol}:{side}"] = (p.isolated_wallet or D(0), [p])
    return found


def ratio(
    wallet: Decimal, positions: Sequence[Position], marks: Mapping[str, Decimal],
    tables: Mapping[str, BracketTable],
) -> Decimal | None:  # fmt: skip
    """``ΣMM / (wallet + ΣuPnL)``; ``None`` when the margin balance is 0 or below."""
    balance = wallet + sum(
        (p.quantity * (marks[p.symbol] - p.entry_price) for p in positions), D(0)
    )
    mm = sum((maintenance_margin(p, marks[p.symbol], tables[p.symbol]) for p in positions), D(0))
    return None if balance <= 0 else mm / balance


def fund_change(
    wallet: Decimal, positions: Sequence[Position], marks: Mapping[str, Decimal]
) -> Decimal:
    """Closeout at mark: the fee out of what is left, the deficit covered."""
    equity = wallet + sum((p.quantity * (marks[p.symbol] - p.entry_price) for p in positions), D(0))
    fee = sum((abs(p.quantity) * marks[p.symbol] * FEE_RATE for p in positions), D(0))
    charged = min(fee, max(equity, D(0)))
    return charged - max(charged - equity, D(0))


@dataclass
class PoolStory:
    """What must happen to one pool along the levels."""

    margin_calls: int = 0
    margin_calls_optional: int = 0  # sent in the same evaluation as the liquidation
    resolutions: int = 0
    liquidated_at: int | None = None
    fund_change: Decimal = field(default_factory=Decimal)
    events: list[tuple[int, str]] = field(default_factory=list)  # (level, kind)


def story(
    wallet: Decimal, positions: Sequence[Position], tables: Mapping[str, BracketTable]
) -> PoolStory:
    """The pool's margin calls, resolutions and liquidation, level by level."""
    told, in_episode = PoolStory(), False
    for level, marks in enumerate(LEVELS):
        r = ratio(wallet, positions, marks, tables)
        if r is None or r >= 1:
            told.margin_calls_optional += not in_episode
            told.liquidated_at, told.fund_change = level, fund_change(wallet, positions, marks)
            told.events.append((level, "liquidation"))
            return told
        if r >= MARGIN_CALL_RATIO and not in_episode:
            told.margin_calls, in_episode = told.margin_calls + 1, True
            told.events.append((level, "margin_call"))
        elif in_episode and r < REARM_BELOW:
            told.resolutions, in_episode = told.resolutions + 1, False
            told.events.append((level, "resolved"))
    return told


def expected(
    accounts: Sequence[Account], tables: Mapping[str, BracketTable]
) -> dict[tuple[str, str], PoolStory]:
    """(account id, pool) -> its story, for every pool of the book."""
    return {
        (account.account_id, name): story(wallet, positions, tables)
        for account in accounts
        for name, (wallet, positions) in pools(account).items()
    }
