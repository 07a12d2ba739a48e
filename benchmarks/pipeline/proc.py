"""The pipeline benchmark: /proc: memory, CPU time, other processes."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

from benchmarks.pipeline.config import CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 when it is gone)."""
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (0 when it is gone)."""
    with suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (``/proc/stat``: all but idle and iowait)."""
    line = Path("/proc/stat").read_text().splitlines()[0]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, line.split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def all_cpu_seconds() -> dict[int, tuple[str, float]]:
    """Every process's command line (shortened) and CPU time."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                name = command.strip()[:70] or f"[{(entry / 'comm').read_text().strip()}]"
                found[int(entry.name)] = (name, cpu_seconds(int(entry.name)))
    return found


def other_processes(
    before: Mapping[int, tuple[str, float]], ours: set[int], seconds: float, shown: int = 5
) -> list[str]:
    """The busiest processes that are not ours, over the window: ``"name: x% of a core"``."""
    after = all_cpu_seconds()
    used = [
        (after[pid][1] - before[pid][1], after[pid][0])
        for pid in after.keys() & before.keys()
        if pid not in ours
    ]
    busiest = sorted(used, reverse=True)[:shown]
    return [f"{name}: {100 * cpu / seconds:.0f}%" for cpu, name in busiest if cpu >= 0.01 * seconds]
