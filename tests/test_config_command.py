"""``marginwatch config``: the settings in force, one per line or as JSON, secrets redacted; and
the redaction of passwords inside URLs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from marginwatch.base.redaction import redact_url
from marginwatch.base.settings import Settings, env_name

SCRIPT = Path(sys.executable).parent / "marginwatch"
REDIS_PASSWORD = "redis-password-not-shown"
WEBHOOK_SECRET = "webhook-secret-not-shown"
HOOK_PASSWORD = "hook-password-not-shown"
SECRETS = {
    "MARGINWATCH_REDIS_URL": f"redis://:{REDIS_PASSWORD}@redis:6379/0",
    "MARGINWATCH_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "MARGINWATCH_WEBHOOK_URLS": json.dumps([f"https://ops:{HOOK_PASSWORD}@hooks.example/mw"]),
    "MARGINWATCH_PARTITIONS": "16",
}


def config(*args: str) -> str:
    """``marginwatch config ARGS``'s stdout, run with the secrets above configured."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MARGINWATCH_")}
    result = subprocess.run([SCRIPT, "config", *args], env=env | SECRETS, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def test_lines_name_every_setting_with_its_value() -> None:
    """One ``MARGINWATCH_NAME=value`` line per setting; unset ones empty."""
    lines = config().splitlines()
    names = [line.partition("=")[0] for line in lines]
    assert names == [env_name(field) for field in Settings.model_fields]
    assert "MARGINWATCH_PARTITIONS=16" in lines
    assert "MARGINWATCH_VENUE=binance" in lines
    assert "MARGINWATCH_METRICS_PORT=" in lines
    assert "MARGINWATCH_LIQUIDATION_FEE_RATES={}" in lines


def test_lines_redact_every_secret() -> None:
    """The webhook secret and the passwords inside URLs are ``***``; none of them is printed."""
    text = config()
    for secret in (REDIS_PASSWORD, WEBHOOK_SECRET, HOOK_PASSWORD):
        assert secret not in text
    lines = text.splitlines()
    assert "MARGINWATCH_REDIS_URL=redis://:***@redis:6379/0" in lines
    assert "MARGINWATCH_WEBHOOK_SECRET=***" in lines
    assert 'MARGINWATCH_WEBHOOK_URLS=["https://ops:***@hooks.example/mw"]' in lines


def test_json_is_one_object_of_typed_values_with_secrets_redacted() -> None:
    """``--json``: every setting by its variable, JSON-typed, secrets as ``***``."""
    text = config("--json")
    for secret in (REDIS_PASSWORD, WEBHOOK_SECRET, HOOK_PASSWORD):
        assert secret not in text
    values = json.loads(text)
    assert list(values) == [env_name(field) for field in Settings.model_fields]
    assert values["MARGINWATCH_PARTITIONS"] == 16
    assert values["MARGINWATCH_METRICS_PORT"] is None
    assert values["MARGINWATCH_WEBHOOK_ALLOW_UNSIGNED"] is False
    assert values["MARGINWATCH_REDIS_URL"] == "redis://:***@redis:6379/0"
    assert values["MARGINWATCH_WEBHOOK_SECRET"] == "***"
    assert values["MARGINWATCH_WEBHOOK_URLS"] == ["https://ops:***@hooks.example/mw"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://default:pw@redis:6380/1", "rediss://default:***@redis:6380/1"),
        ("redis://:p@ss@redis/0", "redis://:***@redis/0"),
        ("unix:///run/redis.sock?db=0&password=pw", "unix:///run/redis.sock?db=0&password=***"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("redis://user@redis/0", "redis://user@redis/0"),
        ("https://hooks.example/mw?token=1#x", "https://hooks.example/mw?token=1#x"),
    ],
)
def test_redact_url_hides_the_password_and_keeps_the_rest(url: str, shown: str) -> None:
    """The password of the user info or of a ``password`` parameter becomes ``***``."""
    assert redact_url(url) == shown
