"""Running a ``marginwatch`` command as a user runs it, in a child process with only the given
settings, and reading the JSON document it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(sys.executable).parent / "marginwatch"


def run_command(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """``marginwatch ARGS`` with only ``settings`` (``MARGINWATCH_`` + name) set."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MARGINWATCH_")}
    env |= {f"MARGINWATCH_{name.upper()}": value for name, value in settings.items()}
    return subprocess.run([SCRIPT, *args], env=env, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip


def document(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON document of a run that exited 0 and printed nothing on stderr (a short run
    prints no progress)."""
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed
