"""Real ``python -m marginwatch`` daemons for the process tests: started with an environment,
logged to files, killed with SIGKILL, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


class Daemons:
    """The daemons of one deployment, each logging to ``directory/NAME.log``."""

    def __init__(self, env: Mapping[str, str], directory: Path) -> None:
        self.directory = directory
        self.env = {**os.environ, **env}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.directory / f"{name}.log").open("ab")
        command = [sys.executable, "-m", "marginwatch", *args, "--loglevel", "WARNING"]
        process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def kill(self, name: str) -> None:
        """SIGKILL the daemon ``name`` (it leaves the running ones)."""
        process = self.processes.pop(name)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def kill_pid(self, pid: int) -> str:
        """SIGKILL the daemon with ``pid``; its name."""
        name = next(n for n, p in self.processes.items() if p.pid == pid)
        self.kill(name)
        return name

    def alive(self) -> bool:
        return all(process.poll() is None for process in self.processes.values())

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            process.wait(timeout=30)
