"""The report contract (output of ``marginwatch evaluate`` and ``status ACCOUNT``): decimal
strings, null where undefined.

Numbers are written like Binance's API strings: at most 8 decimals, cut toward zero (Binance's
positionRisk shows ``initialMargin`` 49.72023376 / 20 as ``2.48601168``), trailing zeros dropped.

Versions of the contract (``REPORT_SCHEMA_VERSION``, the ``version`` of its JSON Schema):

* 1: accounts, their cross pools and positions;
* 2 adds each position's optional ``adl_quantile`` (0-4, ``engine.adl``) and the optional
  ``adl`` (what the quantiles were ranked among, and when that is not known, why). Optional
  fields are absent when unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from marginwatch.engine.exact import AccountReport, PoolReport, PositionReport
from marginwatch.engine.types import MarginMode, PositionSide, Status

DECIMALS = Decimal("0.00000001")
REPORT_SCHEMA_VERSION = 2


def decimal_string(value: Decimal | None) -> str | None:
    """``value`` cut toward zero to 8 decimals, without exponent or trailing zeros."""
    if value is None:
        return None
    text = f"{value.quantize(DECIMALS, rounding=ROUND_DOWN):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in {"-0", ""} else text


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CrossOut(_Out):
    """The account's cross pool."""

    wallet_balance: str
    unrealized_pnl: str
    margin_balance: str
    maintenance_margin: str
    margin_ratio: str | None
    status: Status


class PositionOut(_Out):
    """One position's figures at mark; ``margin_ratio`` is null for cross positions."""

    symbol: str
    position_side: PositionSide
    margin_mode: MarginMode
    quantity: str
    mark_price: str
    notional: str
    unrealized_pnl: str
    initial_margin: str
    maintenance_margin_rate: str
    maintenance_amount: str
    maintenance_margin: str
    liquidation_price: str | None
    bankruptcy_price: str | None
    margin_ratio: str | None
    status: Status
    adl_quantile: int | None = Field(
        default=None, ge=0, le=4, description="ADL quantile, 0-4 (4: deleveraged first)"
    )


class AccountOut(_Out):
    account_id: str
    cross: CrossOut
    positions: list[PositionOut]


class AdlRanking(StrEnum):
    """What ``adl_quantile`` ranks a position among: every position of the evaluated snapshot
    (exactly), or the venue's, merged from the partitions' sketches (an estimate)."""

    SNAPSHOT = "snapshot"
    PARTITION_SKETCHES = "partition_sketches"


class AdlOut(_Out):
    """How the ADL quantiles were ranked; ``note`` says why they are absent, or what to mind."""

    ranked_among: AdlRanking
    sketch_age_seconds: str | None = Field(default=None, description="the oldest sketch's age")
    rank_error_bound: int | None = Field(
        default=None, description="positions by which a rank may be overestimated, at most"
    )
    note: str | None = None


class ReportModel(_Out):
    """The whole report, accounts and positions in input order."""

    model_config = ConfigDict(json_schema_extra={"version": REPORT_SCHEMA_VERSION})

    accounts: list[AccountOut]
    adl: AdlOut | None = None

    def to_json(self) -> str:
        """The document: optional fields left out when not set."""
        return self.model_dump_json(indent=2, exclude_unset=True)


def _cross_out(pool: PoolReport) -> CrossOut:
    return CrossOut(
        wallet_balance=str(decimal_string(pool.wallet_balance)),
        unrealized_pnl=str(decimal_string(pool.unrealized_pnl)),
        margin_balance=str(decimal_string(pool.margin_balance)),
        maintenance_margin=str(decimal_string(pool.maintenance_margin)),
        margin_ratio=decimal_string(pool.margin_ratio),
        status=pool.status,
    )


def _position_out(report: PositionReport, adl_quantile: int | None) -> PositionOut:
    position = report.position

    def number(value: Decimal) -> str:
        return str(decimal_string(value))

    return PositionOut(
        symbol=position.symbol,
        position_side=position.position_side,
        margin_mode=position.margin_mode,
        quantity=number(position.quantity),
        mark_price=number(report.mark_price),
        notional=number(report.notional),
        unrealized_pnl=number(report.unrealized_pnl),
        initial_margin=number(report.initial_margin),
        maintenance_margin_rate=number(report.bracket.maintenance_margin_rate),
        maintenance_amount=number(report.bracket.maintenance_amount),
        maintenance_margin=number(report.maintenance_margin),
        liquidation_price=decimal_string(report.liquidation_price),
        bankruptcy_price=decimal_string(report.bankruptcy_price),
        margin_ratio=decimal_string(report.margin_ratio),
        status=report.pool.status,
        **({} if adl_quantile is None else {"adl_quantile": adl_quantile}),
    )


def render_report(
    reports: Iterable[AccountReport],
    adl_quantiles: Sequence[Sequence[int] | None] | None = None,
    adl: AdlOut | None = None,
) -> ReportModel:
    """The report document for evaluated accounts; ``adl_quantiles`` per account (``None``:
    unknown) in position order, and how they were ranked."""
    accounts = list(reports)
    quantiles = adl_quantiles if adl_quantiles is not None else [None] * len(accounts)
    rendered = [
        AccountOut(
            account_id=report.account.account_id,
            cross=_cross_out(report.cross),
            positions=[
                _position_out(position, None if known is None else known[k])
                for k, position in enumerate(report.positions)
            ],
        )
        for report, known in zip(accounts, quantiles, strict=True)
    ]
    return (
        ReportModel(accounts=rendered) if adl is None else ReportModel(accounts=rendered, adl=adl)
    )
