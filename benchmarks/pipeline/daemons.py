"""The pipeline benchmark: daemons."""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path

import numpy as np

from benchmarks.pipeline.config import STOP_TIMEOUT_S, WORKERS


class Daemons:
    """Child processes with their logs; ``stop_all`` ends every one still running."""

    def __init__(self, logs: Path, env: Mapping[str, str]) -> None:
        self.logs = logs
        self.env = dict(env)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: Sequence[str], **env: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                command, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes[name] = process
        return process

    def pids(self, prefix: str = "") -> dict[str, int]:
        return {n: p.pid for n, p in self.processes.items() if n.startswith(prefix)}

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None and not name.startswith(("producer", "py-spy")):
                raise RuntimeError(f"{name} exited ({process.returncode}); see {self.logs}")

    def stop(self, *names: str) -> None:
        chosen = [self.processes.pop(name) for name in names if name in self.processes]
        for process in chosen:
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in chosen:
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        self.stop(*self.processes)


def marginwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "marginwatch", *args]


def worker_specs(partitions: int, processes: int = WORKERS) -> list[str]:
    """``--partitions`` of each of ``processes`` workers (or executors): contiguous ranges."""
    bounds = np.linspace(0, partitions, processes + 1).round().astype(int)
    return [f"{bounds[w]}-{bounds[w + 1] - 1}" for w in range(processes)]


def crash_scenarios(symbols: Sequence[str], args: argparse.Namespace) -> list[str]:
    """Crashes starting every ``--crash-every`` s, on symbols spread over the list."""
    last = max(args.crash_first + 1, args.seconds - 5)
    starts = np.arange(args.crash_first, last, args.crash_every)
    stride = max(1, len(symbols) // max(1, len(starts)))
    return [
        f"{symbols[(k * stride) % len(symbols)]}:{args.crash_move:g}%:{args.crash_seconds:g}s"
        f"@{start:g}s"
        for k, start in enumerate(starts)
    ]


def cascade_scenarios(symbols: Sequence[str], args: argparse.Namespace) -> list[str]:
    """``--cascade MOVE:SECONDS@START``: every symbol moves MOVE% over SECONDS from START."""
    move, rest = args.cascade.split(":")
    seconds, start = rest.rstrip("s").split("@")
    return [f"{symbol}:{float(move):g}%:{float(seconds):g}s@{float(start.rstrip('s')):g}s"
            for symbol in symbols]  # fmt: skip


def producer_command(
    symbols: Sequence[str], seconds: float, seed: int, scenarios: list[str]
) -> list[str]:
    command = marginwatch(
        "producer",
        "--source",
        "synthetic",
        "--symbols",
        ",".join(symbols),
        "--rate",
        "1",
        "--seed",
        str(seed),
        "--duration",
        f"{seconds:g}",
    )
    for scenario in scenarios:
        command += ["--scenario", scenario]
    return command


def published_ticks(log: Path) -> tuple[int, str]:
    """The producer's own count of published ticks and its rejects, from its summary line."""
    found = re.findall(r"published (\d+) ticks; rejects: (.*)", log.read_text(errors="replace"))
    return (int(found[-1][0]), found[-1][1]) if found else (0, "no summary line")


def wait_until(condition: Callable[[], bool], timeout: float, what: str, daemons: Daemons) -> float:
    """Poll until ``condition``; returns the seconds waited."""
    started = time.monotonic()
    while not condition():
        daemons.check_alive()
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started
