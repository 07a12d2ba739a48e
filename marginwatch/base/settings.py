"""Settings, from ``MARGINWATCH_*`` environment variables, read once at start-up."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from marginwatch.base import crash
from marginwatch.engine.brackets import BracketTable, default_tables, load_bracket_file
from marginwatch.engine.types import (
    DEFAULT_MARGIN_CALL_RATIO,
    DEFAULT_WARNING_RATIO,
    Thresholds,
    Venue,
)


class ConfigurationError(RuntimeError):
    """A command cannot run with this configuration; the message says why."""


class Settings(BaseSettings):
    """Every setting of every daemon; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="MARGINWATCH_", extra="ignore")

    redis_url: str | None = Field(None, description="Redis URL; unset: the demo starts its own")
    partitions: int = Field(8, ge=1, le=4096, description="partitions P, fixed per deployment")
    venue: Venue = Venue.BINANCE
    warning_ratio: Decimal = DEFAULT_WARNING_RATIO
    margin_call_ratio: Decimal = DEFAULT_MARGIN_CALL_RATIO
    margin_call_hysteresis: Decimal = Field(
        Decimal("0.05"), ge=0, description="re-arm a margin call below margin_call_ratio - this"
    )
    brackets_file: str | None = Field(None, description="leverageBracket JSON replacing defaults")
    liquidation_fee_rate: Decimal = Field(Decimal("0.0125"), ge=0, lt=1)
    liquidation_fee_rates: dict[str, Decimal] = Field(
        default_factory=dict, description="per-symbol clearance fee rates (JSON object)"
    )
    stale_after_seconds: float = Field(10.0, gt=0)
    max_jump_ratio: Decimal | None = Field(None, gt=0, description="reject ticks moving more")
    webhook_urls: list[str] = Field(default_factory=list)
    webhook_secret: str = ""
    webhook_allow_unsigned: bool = Field(
        False, description="deliver webhooks with an empty secret (a demo; never in production)"
    )
    webhook_max_attempts: int = Field(5, ge=1)
    webhook_claim_after_seconds: float = Field(
        30.0, gt=0, description="take over a delivery pending this long on another deliverer"
    )
    metrics_port: int | None = Field(None, ge=0, le=65535)
    task_time_limit_seconds: int = Field(60, ge=1)
    liquidation_resend_after_seconds: float = Field(
        3.0, gt=0, description="send a due liquidation again after this, if none is queued"
    )
    crash_at: str | None = Field(
        None, description="exit abruptly at this crash point (fault tests only; see base.crash)"
    )
    visibility_timeout_seconds: int | None = Field(
        None, ge=1, description="redeliver an unacknowledged task after this; unset: limit + 300"
    )

    @field_validator("crash_at")
    @classmethod
    def _known_crash_point(cls, value: str | None) -> str | None:
        if value is not None and value not in crash.POINTS:
            raise ValueError(f"unknown crash point {value!r}; known: {', '.join(crash.POINTS)}")
        return value

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.warning_ratio, self.margin_call_ratio)

    @property
    def rearm_below(self) -> Decimal:
        """A pool's margin-call episode ends below this ratio (``margin_call_ratio −
        margin_call_hysteresis``); the next margin call needs a new episode."""
        return self.margin_call_ratio - self.margin_call_hysteresis

    def liquidation_fee_rate_for(self, symbol: str) -> Decimal:
        return self.liquidation_fee_rates.get(symbol, self.liquidation_fee_rate)


def redis_url(settings: Settings) -> str:
    """``MARGINWATCH_REDIS_URL``, required by every command that talks to Redis."""
    if not settings.redis_url:
        raise ConfigurationError("MARGINWATCH_REDIS_URL is not set")
    return settings.redis_url


def bracket_tables(settings: Settings) -> dict[str, BracketTable]:
    """The bracket tables in force: ``MARGINWATCH_BRACKETS_FILE`` or the shipped ones."""
    if settings.brackets_file:
        return load_bracket_file(settings.brackets_file)
    return dict(default_tables())
