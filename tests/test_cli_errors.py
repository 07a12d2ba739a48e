"""Errors a user can cause, as the ``marginwatch`` console script reports them: one line on
stderr naming what is wrong, a non-zero exit status, never a traceback, for every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from marginwatch.cli.embedded_redis import RedisServer, free_port

SCRIPT = Path(sys.executable).parent / "marginwatch"
EXAMPLE = Path(__file__).parent.parent / "examples" / "snapshot.json"
EXAMPLE_LINES = EXAMPLE.parent / "accounts.jsonl"
PASSWORD = "hunter2-not-shown"
# Every command that reads the settings, with arguments that would otherwise run it briefly.
SETTINGS_COMMANDS = {
    "accounts load": ["accounts", "load", str(EXAMPLE)],
    "accounts load jsonl": ["accounts", "load", str(EXAMPLE_LINES)],
    "worker": ["worker", "--partitions", "0"],
    "executor": ["executor"],
    "producer": ["producer", "--duration", "1"],
    "status": ["status"],
    "stress": ["stress", "--shock", "*:-10%"],
    "migrate": ["migrate"],
    "demo": ["demo", "--duration", "1", "--metrics-port-base", "0"],
    "config": ["config"],
}
# Every command that talks to Redis.
REDIS_COMMANDS = sorted(set(SETTINGS_COMMANDS) - {"config"})
# The commands that read the brackets file (the worker and the executor after reaching Redis).
BRACKETS_COMMANDS = (
    "accounts load", "accounts load jsonl", "worker", "executor", "producer", "stress"
)  # fmt: skip


def marginwatch(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run the console script with only ``settings`` (``MARGINWATCH_`` + name) configured."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MARGINWATCH_")}
    env |= {f"MARGINWATCH_{name.upper()}": value for name, value in settings.items()}
    return subprocess.run([SCRIPT, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The single stderr line of a run that exited with ``status``, without ``marginwatch: ``."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("marginwatch: ")
    return lines[0].removeprefix("marginwatch: ")


@pytest.mark.parametrize("command", sorted(SETTINGS_COMMANDS))
def test_a_bad_setting_is_one_line_naming_its_variable(command: str) -> None:
    """MARGINWATCH_PARTITIONS=abc: exit 2, the variable and the value named."""
    result = marginwatch(*SETTINGS_COMMANDS[command], partitions="abc")
    line = one_line(result, 2)
    assert line.startswith("MARGINWATCH_PARTITIONS: "), line
    assert "'abc'" in line


def test_every_bad_setting_is_named_on_the_one_line() -> None:
    """Two bad settings and a JSON one that does not parse are all named, on one line."""
    line = one_line(marginwatch("status", partitions="0", venue="kraken"), 2)
    assert "MARGINWATCH_PARTITIONS: " in line
    assert "MARGINWATCH_VENUE: " in line
    line = one_line(marginwatch("status", webhook_urls="not json"), 2)
    assert line.startswith("MARGINWATCH_WEBHOOK_URLS: not valid JSON"), line


def test_a_bad_secret_setting_is_named_without_its_value() -> None:
    """A Redis URL of the wrong scheme is refused by name; the value, a secret, is not shown."""
    line = one_line(marginwatch("status", redis_url=f"http://:{PASSWORD}@127.0.0.1/0"), 2)
    assert line.startswith("MARGINWATCH_REDIS_URL: expected a URL starting with redis://"), line
    assert PASSWORD not in line


@pytest.mark.parametrize("command", REDIS_COMMANDS)
def test_unreachable_redis_is_one_line_with_the_url_redacted(command: str) -> None:
    """A Redis URL on a closed port: exit 1, the URL named without its password."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    line = one_line(marginwatch(*SETTINGS_COMMANDS[command], redis_url=url), 1)
    assert line.startswith(f"cannot reach Redis at {url.replace(PASSWORD, '***')} "), line
    assert "MARGINWATCH_REDIS_URL" in line
    assert PASSWORD not in line


@pytest.mark.parametrize("command", BRACKETS_COMMANDS)
def test_a_missing_brackets_file_is_one_line_naming_the_path(
    command: str, redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """MARGINWATCH_BRACKETS_FILE naming no file: exit 2, the variable and the path named."""
    missing = tmp_path / "brackets.json"
    result = marginwatch(*SETTINGS_COMMANDS[command], redis_url=redis_server.url,
                         brackets_file=str(missing))  # fmt: skip
    line = one_line(result, 2)
    assert line == f"MARGINWATCH_BRACKETS_FILE={missing}: cannot read (No such file or directory)"


def test_a_brackets_file_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    """A brackets file that does not parse: exit 2, the path and the JSON error named."""
    path = tmp_path / "brackets.json"
    path.write_text("[{", encoding="utf-8")
    line = one_line(marginwatch("producer", redis_url="redis://127.0.0.1:1/0",
                                brackets_file=str(path)), 2)  # fmt: skip
    assert line.startswith(f"MARGINWATCH_BRACKETS_FILE={path}: not valid JSON"), line


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["evaluate", "{missing}"], "{missing}: cannot read (No such file or directory)"),
        (["accounts", "load", "{missing}"], "{missing}: cannot read (No such file or directory)"),
        (
            ["accounts", "load", "--format", "jsonl", "{missing}"],
            "{missing}: cannot read (No such file or directory)",
        ),
        (["producer", "--source", "replay", "--file", "{missing}"], "--file: {missing}: "),
        (["stress", "--snapshot", "{missing}", "--shock", "*:-1%"], "--snapshot: {missing}: "),
    ],
    ids=["evaluate", "accounts load", "accounts load jsonl", "producer replay", "stress"],
)
def test_a_missing_file_argument_is_one_line_naming_the_path(
    args: list[str], named: str, tmp_path: Path
) -> None:
    """A snapshot or replay file that does not exist: exit 2, its path named."""
    missing = str(tmp_path / "missing.json")
    result = marginwatch(*(arg.format(missing=missing) for arg in args),
                         redis_url="redis://127.0.0.1:1/0")  # fmt: skip
    assert one_line(result, 2).startswith(named.format(missing=missing))


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--grid", "-30%:30%"], "--grid: '-30%:30%': expected START%:STOP%:STEP%, e.g. "),
        (["--shock", "BTCUSDT:-20"], "--shock: 'BTCUSDT:-20': expected SYMBOL:MOVE% or "),
    ],
    ids=["grid", "shock"],
)
def test_a_bad_stress_option_is_one_line_naming_it_and_its_format(
    args: list[str], named: str
) -> None:
    """A scenario option that cannot be read: exit 2, the option and its format named."""
    result = marginwatch("stress", "--snapshot", str(EXAMPLE), *args)
    assert one_line(result, 2).startswith(named)
