"""The logging of every daemon, configured once when it starts: each record on stderr with the
time (UTC, ISO 8601, milliseconds), the level, the daemon and its partitions, the logger and the
message, as text or as one JSON object a line (``MARGINWATCH_LOG_FORMAT``)::

    2024-10-31T12:00:00.123Z INFO worker partitions=0-3 marginwatch.worker: ...
    {"time": "2024-10-31T12:00:00.123Z", "level": "INFO", "daemon": "worker",
     "partitions": "0-3", "logger": "marginwatch.worker", "message": "..."}

Celery leaves this configuration alone (``marginwatch.runtime.process``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from marginwatch.base.partitions import format_partitions
from marginwatch.base.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s {daemon} %(name)s: %(message)s"
JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger"}
# What a JSON line holds: no record extras (Celery's "data" carries a task's arguments).
JSON_FIELDS = frozenset({"time", "level", "daemon", "partitions", "logger", "message",
                         "exc_info", "stack_info"})  # fmt: skip


class _TextFormatter(logging.Formatter):
    """Times as ``2024-10-31T12:00:00.123Z``."""

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"


class _JsonFormatter(_TextFormatter, JsonFormatter):
    """The same times, in JSON objects."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        """The fields of ``JSON_FIELDS`` alone, whatever extras the record carries."""
        super().add_fields(log_data, record, message_dict)
        for extra in set(log_data) - JSON_FIELDS:
            del log_data[extra]


def configure_logging(
    settings: Settings, daemon: str, partitions: Sequence[int] = (), level: str | None = None
) -> None:
    """Log every record of the process at ``level`` (default ``MARGINWATCH_LOG_LEVEL``) and
    above to stderr, naming ``daemon`` and its ``partitions``; warnings too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(settings, daemon, format_partitions(partitions)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or settings.log_level)
    logging.captureWarnings(True)


def _formatter(settings: Settings, daemon: str, partitions: str) -> logging.Formatter:
    if settings.log_format == "json":
        fields = {"daemon": daemon, **({"partitions": partitions} if partitions else {})}
        return _JsonFormatter(JSON_FORMAT, rename_fields=JSON_NAMES, static_fields=fields)
    who = f"{daemon} partitions={partitions}" if partitions else daemon
    return _TextFormatter(TEXT_FORMAT.format(daemon=who.replace("%", "%%")))
