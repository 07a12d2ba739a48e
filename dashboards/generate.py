"""Write the Grafana dashboards of marginwatch as JSON, deterministically, from plain dicts.

    .venv/bin/python -m dashboards.generate           # (re)write dashboards/*.json
    .venv/bin/python -m dashboards.generate --check   # exit 1 if a committed file is out of date

The builder is ``dashboards.builder``; each dashboard is a module (``risk``, ``pipeline``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dashboards.builder import Json
from dashboards.pipeline import pipeline_health
from dashboards.risk import risk_overview

HERE = Path(__file__).resolve().parent


DASHBOARDS: dict[str, Callable[[], Json]] = {
    "marginwatch-risk.json": risk_overview,
    "marginwatch-pipeline.json": pipeline_health,
}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write dashboards/*.json.")
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = HERE / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        if args.check:
            stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote dashboards/{name}")
    if stale:
        print(
            f"out of date, run python -m dashboards.generate: {', '.join(stale)}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
