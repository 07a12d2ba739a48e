"""The chaos run's daemons: real ``marginwatch`` processes, restarted like a container runtime
would, killed with SIGKILL on demand or armed with crash points, and watched for deaths that
nobody caused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from marginwatch.base.crash import EXIT_STATUS

RESTART_DELAY_SECONDS = 0.3


@dataclass
class Daemon:
    """One supervised daemon: its command and the crash points its next starts are armed with."""

    name: str
    args: Sequence[str]
    crash_points: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    armed: str | None = None
    killed: bool = False


class Supervisor:
    """Starts daemons, restarts them when they exit, and records why each exit happened."""

    def __init__(self, env: Mapping[str, str], directory: Path) -> None:
        self.env, self.directory = dict(env), directory
        self.daemons: dict[str, Daemon] = {}
        self.faults: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)

    def add(self, name: str, *args: str, crash_points: Sequence[str] = ()) -> Daemon:
        daemon = Daemon(name, args, list(crash_points))
        self.daemons[name] = daemon
        self._start(daemon)
        return daemon

    def _start(self, daemon: Daemon) -> None:
        daemon.armed = daemon.crash_points.pop(0) if daemon.crash_points else None
        env = {**self.env, **({"MARGINWATCH_CRASH_AT": daemon.armed} if daemon.armed else {})}
        log = (self.directory / f"{daemon.name}.log").open("ab")
        command = [sys.executable, "-m", "marginwatch", *daemon.args, "--loglevel", "WARNING"]
        daemon.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        daemon.killed = False

    def watch(self) -> None:
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                for daemon in self.daemons.values():
                    self._restart_if_exited(daemon)

    def _restart_if_exited(self, daemon: Daemon) -> None:
        assert daemon.process is not None
        status = daemon.process.poll()
        if status is None:
            return
        if daemon.killed:
            self.faults[f"kill -9 {daemon.name.split('-')[0]}"] += 1
            if daemon.armed:  # killed before reaching its crash point: armed again
                daemon.crash_points.insert(0, daemon.armed)
        elif daemon.armed and status == EXIT_STATUS:
            self.faults[f"crash point {daemon.armed}"] += 1
        else:
            self.unexpected.append(f"{daemon.name} exited with {status} (armed {daemon.armed})")
        time.sleep(RESTART_DELAY_SECONDS)
        self._start(daemon)

    def kill(self, name: str) -> float:
        """SIGKILL the daemon (the watcher restarts it); when, in seconds since the epoch."""
        with self._lock:
            daemon = self.daemons[name]
            assert daemon.process is not None
            daemon.killed = True
            os.kill(daemon.process.pid, signal.SIGKILL)
            return time.time()

    def arm(self, name: str, *crash_points: str) -> None:
        """The daemon's next starts are armed with these crash points, in order."""
        with self._lock:
            self.daemons[name].crash_points.extend(crash_points)

    def stop(self) -> None:
        """Stop watching, then terminate every daemon."""
        self._stop.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout=5)
        for daemon in self.daemons.values():
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.process.terminate()
        for daemon in self.daemons.values():
            if daemon.process is not None:
                try:
                    daemon.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    daemon.process.kill()
                    daemon.process.wait()
