"""Settings, from ``MARGINWATCH_*`` environment variables, read once at start-up."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from marginwatch.base import crash
from marginwatch.base.redaction import REDACTED, redact_url
from marginwatch.base.stress_specs import SpecError, spec_reason, written_scenario
from marginwatch.engine.brackets import (
    BracketTable,
    BracketTableError,
    default_tables,
    load_bracket_file,
)
from marginwatch.engine.episodes import EpisodeRules
from marginwatch.engine.types import (
    DEFAULT_MARGIN_CALL_RATIO,
    DEFAULT_WARNING_RATIO,
    Thresholds,
    Venue,
)

ENV_PREFIX = "MARGINWATCH_"
# Never shown: secret settings print as ***, and URLs with their password as ***.
SECRET_FIELDS = frozenset({"webhook_secret"})
URL_FIELDS = frozenset({"redis_url", "broker_url", "webhook_urls"})
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# pydantic-settings names the field of a value it cannot decode (a JSON setting) only here.
_UNDECODABLE_FIELD = re.compile(r'field "(\w+)"')


class ConfigurationError(RuntimeError):
    """A command cannot run with this configuration; the message says why."""


class Settings(BaseSettings):
    """Every setting of every daemon; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    redis_url: str | None = Field(
        None, description="the state: a Redis URL, or a Redis Cluster's nodes comma-separated"
    )
    broker_url: str | None = Field(
        None, description="Celery's broker (redis:// or amqp://); unset: MARGINWATCH_REDIS_URL"
    )
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
    wait_replicas: int = Field(
        0, ge=0, description="acknowledge a liquidation once this many replicas hold it (WAIT)"
    )
    wait_timeout_ms: int = Field(1000, ge=1, description="how long a liquidation waits for them")
    crash_at: str | None = Field(
        None, description="exit abruptly at this crash point (fault tests only; see base.crash)"
    )
    visibility_timeout_seconds: int | None = Field(
        None, ge=1, description="redeliver an unacknowledged task after this; unset: limit + 300"
    )
    log_format: Literal["text", "json"] = Field("text", description="daemons' log lines")
    log_level: str = Field("INFO", description="the daemons' level; --loglevel overrides it")
    task_events: bool = Field(
        False, description="Celery task events and worker heartbeats (Flower, celery-exporter)"
    )
    stress_scenarios: list[str] = Field(
        default_factory=list,
        description="scenarios the workers export as metrics (JSON list; each its shocks as "
        "--shock writes them, space-separated: 'BTCUSDT:-20% *:-10%')",
    )
    stress_interval_seconds: float = Field(
        30.0, gt=0, description="each partition's scenarios computed at most this often"
    )
    stress_betas_file: str | None = Field(None, description="the scenarios' betas (--beta FILE)")
    stress_beta_base: str | None = Field(None, description="the betas' base symbol")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("crash_at")
    @classmethod
    def _known_crash_point(cls, value: str | None) -> str | None:
        if value is not None and value not in crash.POINTS:
            raise ValueError(f"unknown crash point {value!r}; known: {', '.join(crash.POINTS)}")
        return value

    @field_validator("stress_scenarios")
    @classmethod
    def _readable_scenarios(cls, value: list[str]) -> list[str]:
        names: set[str] = set()
        for number, text in enumerate(value, start=1):
            try:
                name = written_scenario(text, None).name
            except SpecError as error:
                raise ValueError(f"scenario {number}: {spec_reason(error)[1]}") from None
            if name in names:
                raise ValueError(f"scenario {number}: {name} given twice")
            names.add(name)
        return value

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.warning_ratio, self.margin_call_ratio)

    @property
    def rearm_below(self) -> Decimal:
        """A pool's margin-call episode ends below this ratio (``margin_call_ratio −
        margin_call_hysteresis``); the next margin call needs a new episode."""
        return self.margin_call_ratio - self.margin_call_hysteresis

    @property
    def episode_rules(self) -> EpisodeRules:
        """Where a margin-call episode starts and below which it ends."""
        return EpisodeRules(self.margin_call_ratio, self.rearm_below)

    def liquidation_fee_rate_for(self, symbol: str) -> Decimal:
        return self.liquidation_fee_rates.get(symbol, self.liquidation_fee_rate)


def env_name(field: str) -> str:
    """The environment variable of setting ``field``: ``MARGINWATCH_`` and its name in capitals."""
    return f"{ENV_PREFIX}{field.upper()}"


SECRETS_DIR_VARIABLE = ENV_PREFIX + "SECRETS_DIR"


def read_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from the environment, and from files in ``MARGINWATCH_SECRETS_DIR`` when it
    is set (one file per setting, named like its variable, e.g. ``MARGINWATCH_REDIS_URL``:
    Compose and Kubernetes secrets; a variable wins over a file). A bad value raises
    ``ConfigurationError`` naming its variable (without echoing a secret)."""
    secrets_dir = (os.environ if environ is None else environ).get(SECRETS_DIR_VARIABLE)
    if secrets_dir and not os.path.isdir(secrets_dir):
        raise ConfigurationError(f"{SECRETS_DIR_VARIABLE}={secrets_dir}: not a directory")
    try:
        return Settings(_secrets_dir=secrets_dir or None)
    except ValidationError as error:
        raise ConfigurationError("; ".join(map(_explain, error.errors()))) from None
    except SettingsError as error:
        field = _UNDECODABLE_FIELD.search(str(error))
        name = env_name(field[1]) if field else ENV_PREFIX + "*"
        raise ConfigurationError(f"{name}: not valid JSON ({error.__cause__})") from None


def _explain(error: Any) -> str:
    """``MARGINWATCH_PARTITIONS: Input should be a valid integer (got 'abc')``."""
    field, *inner = error["loc"]
    where = env_name(str(field)) + "".join(f"[{part}]" for part in inner)
    message = str(error["msg"]).removeprefix("Value error, ")
    shown = field not in SECRET_FIELDS | URL_FIELDS and isinstance(error.get("input"), str)
    return f"{where}: {message}" + (f" (got {error['input']!r})" if shown else "")


def redacted(settings: Settings) -> dict[str, Any]:
    """Every setting by its environment variable, as JSON values, secrets redacted."""
    values = settings.model_dump(mode="json")
    return {env_name(field): _redact(field, value) for field, value in values.items()}


def _redact(field: str, value: Any) -> Any:
    if field in SECRET_FIELDS:
        return REDACTED if value else value
    if field in URL_FIELDS and isinstance(value, list):
        return [redact_url(url) for url in value]
    if field in URL_FIELDS and isinstance(value, str):
        return redact_url(value)
    return value


def redis_url(settings: Settings) -> str:
    """``MARGINWATCH_REDIS_URL``, required by every command that talks to Redis."""
    url, name = settings.redis_url, env_name("redis_url")
    if not url:
        raise ConfigurationError(f"{name} is not set")
    for part in url.split(","):
        if not part.strip().startswith(REDIS_URL_SCHEMES):
            schemes = " or ".join(REDIS_URL_SCHEMES)
            raise ConfigurationError(f"{name}: expected a URL starting with {schemes}")
    return url


def broker_url(settings: Settings) -> str:
    """``MARGINWATCH_BROKER_URL``, else the state Redis (which must then be a single Redis:
    Celery has no Redis Cluster transport)."""
    if settings.broker_url:
        return settings.broker_url
    state = redis_url(settings)
    if "," in state:
        raise ConfigurationError(
            "MARGINWATCH_BROKER_URL is not set: with a Redis Cluster as the state "
            "(MARGINWATCH_REDIS_URL), Celery needs its own broker (redis:// or amqp://)"
        )
    return state


def bracket_tables(settings: Settings) -> dict[str, BracketTable]:
    """The bracket tables in force: ``MARGINWATCH_BRACKETS_FILE`` or the shipped ones."""
    path = settings.brackets_file
    if not path:
        return dict(default_tables())
    try:
        return load_bracket_file(path)
    except (OSError, json.JSONDecodeError, BracketTableError) as error:
        problem = _unusable_file(error)
        raise ConfigurationError(f"{env_name('brackets_file')}={path}: {problem}") from None


def _unusable_file(error: Exception) -> str:
    if isinstance(error, OSError):
        return f"cannot read ({error.strerror})"
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON ({error})"
    return str(error)
