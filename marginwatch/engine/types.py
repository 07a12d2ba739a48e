"""Domain types of the margin engine: brackets, positions, accounts, thresholds.

Plain frozen dataclasses over ``Decimal``. They carry no I/O and no clock; validation of
untrusted input happens at the edge (``marginwatch.base.snapshot``), and the invariants that the
formulas rely on are checked here in ``__post_init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum


class PositionSide(StrEnum):
    """Binance ``positionSide``: ``BOTH`` in one-way mode, ``LONG``/``SHORT`` legs in hedge mode."""

    BOTH = "BOTH"
    LONG = "LONG"
    SHORT = "SHORT"


class MarginMode(StrEnum):
    """Cross (shared wallet) or isolated (own wallet per position)."""

    CROSS = "cross"
    ISOLATED = "isolated"


class PositionMode(StrEnum):
    """Account-wide position mode."""

    ONE_WAY = "one_way"
    HEDGE = "hedge"


class Status(StrEnum):
    """Risk status of a margin pool (an account's cross pool or one isolated position)."""

    OK = "ok"
    WARNING = "warning"
    MARGIN_CALL = "margin_call"
    LIQUIDATION = "liquidation"

    @property
    def severity(self) -> int:
        """0 for ``ok`` up to 3 for ``liquidation``; the batch path encodes statuses this way."""
        return STATUS_ORDER.index(self)


STATUS_ORDER: tuple[Status, ...] = (
    Status.OK,
    Status.WARNING,
    Status.MARGIN_CALL,
    Status.LIQUIDATION,
)


class Venue(StrEnum):
    """Which exchange's liquidation-price convention to reproduce."""

    BINANCE = "binance"
    BYBIT = "bybit"


@dataclass(frozen=True, slots=True)
class Bracket:
    """One leverage bracket (tier): notional in ``[notional_floor, notional_cap)``."""

    notional_floor: Decimal
    notional_cap: Decimal
    max_leverage: int
    maintenance_margin_rate: Decimal
    maintenance_amount: Decimal

    def holds(self, notional: Decimal) -> bool:
        """Floor inclusive, cap exclusive (the convention of reference §2.3)."""
        return self.notional_floor <= notional < self.notional_cap


@dataclass(frozen=True, slots=True)
class Position:
    """A position as Binance reports it: ``quantity`` is ``positionAmt`` (signed).

    A ``BOTH`` position's sign gives its direction; a ``LONG`` leg is positive and a ``SHORT``
    leg negative. ``isolated_wallet`` is set exactly for isolated positions.
    """

    symbol: str
    quantity: Decimal
    entry_price: Decimal
    leverage: int
    margin_mode: MarginMode
    position_side: PositionSide = PositionSide.BOTH
    isolated_wallet: Decimal | None = None

    def __post_init__(self) -> None:
        if self.quantity == 0:
            raise ValueError("quantity must not be zero")
        if (self.margin_mode is MarginMode.ISOLATED) != (self.isolated_wallet is not None):
            raise ValueError("isolated_wallet is required for isolated positions only")

    @property
    def is_isolated(self) -> bool:
        return self.margin_mode is MarginMode.ISOLATED


@dataclass(frozen=True, slots=True)
class Account:
    """An account: its cross wallet and every open position."""

    account_id: str
    cross_wallet_balance: Decimal
    positions: tuple[Position, ...] = ()
    position_mode: PositionMode = PositionMode.ONE_WAY


DEFAULT_WARNING_RATIO = Decimal("0.7")
DEFAULT_MARGIN_CALL_RATIO = Decimal("0.8")
LIQUIDATION_RATIO = Decimal("1")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Margin-ratio thresholds of the statuses; ``ok`` below ``warning_ratio``."""

    warning_ratio: Decimal = DEFAULT_WARNING_RATIO
    margin_call_ratio: Decimal = DEFAULT_MARGIN_CALL_RATIO
    liquidation_ratio: Decimal = LIQUIDATION_RATIO

    def __post_init__(self) -> None:
        if not 0 < self.warning_ratio <= self.margin_call_ratio <= self.liquidation_ratio:
            raise ValueError("thresholds must satisfy 0 < warning <= margin call <= liquidation")

    def status_of(self, margin_ratio: Decimal | None) -> Status:
        """Status for a ratio; ``None`` (margin balance <= 0) is ``liquidation``."""
        if margin_ratio is None or margin_ratio >= self.liquidation_ratio:
            return Status.LIQUIDATION
        if margin_ratio >= self.margin_call_ratio:
            return Status.MARGIN_CALL
        if margin_ratio >= self.warning_ratio:
            return Status.WARNING
        return Status.OK


@dataclass(frozen=True, slots=True)
class MarkPrices:
    """Mark price per symbol, as of one moment (time is the caller's business)."""

    by_symbol: dict[str, Decimal] = field(default_factory=dict)

    def of(self, symbol: str) -> Decimal:
        try:
            return self.by_symbol[symbol]
        except KeyError:
            raise KeyError(f"no mark price for {symbol}") from None
