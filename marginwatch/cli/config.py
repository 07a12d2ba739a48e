"""``marginwatch config``: the settings in force, with the webhook secret and the passwords inside
URLs shown as ``***``."""

from __future__ import annotations

import json
from typing import Any, TextIO

from marginwatch.base.exits import EXIT_OK
from marginwatch.base.settings import Settings, redacted


def print_config(settings: Settings, stdout: TextIO, *, as_json: bool) -> int:
    """``MARGINWATCH_NAME=value`` lines (empty: unset), or one JSON object."""
    values = redacted(settings)
    if as_json:
        stdout.write(json.dumps(values, indent=2) + "\n")
    else:
        stdout.write("".join(f"{name}={_env_value(value)}\n" for name, value in values.items()))
    return EXIT_OK


def _env_value(value: Any) -> str:
    """A value as its variable would be written: text as is, others as JSON, unset empty."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)
