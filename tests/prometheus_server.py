"""A real Prometheus (Debian's ``prometheus`` package) as a child process, and its HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from marginwatch.cli.embedded_redis import free_port
from tests.polling import wait_for

API_TIMEOUT_SECONDS = 10.0


class PrometheusError(RuntimeError):
    """Prometheus did not start, or its API answered with an error."""


def prometheus_binary() -> str:
    """Path of the ``prometheus`` executable (``.ci/run`` installs Debian's package)."""
    found = shutil.which("prometheus")
    if found is None:
        raise PrometheusError("prometheus not found: install it (apt-get install -y prometheus)")
    return found


@dataclass
class PrometheusServer:
    """A running Prometheus on 127.0.0.1; ``stop()`` ends it."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "prometheus.log"

    def get(self, path: str, **params: str) -> Any:
        """The ``data`` of a GET on ``/api/v1/<path>``; ``PrometheusError`` on an error status."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=API_TIMEOUT_SECONDS) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:  # 400/422: a bad query; the body says why
            body = json.load(error)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> dict[str, Any]:
        """An instant query at now: ``{"resultType": ..., "result": ...}``."""
        return dict(self.get("query", query=expr))

    def query_range(self, expr: str, start: float, end: float, step: float) -> dict[str, Any]:
        """A range query from ``start`` to ``end`` (Unix seconds) every ``step`` seconds."""
        return dict(
            self.get("query_range", query=expr, start=str(start), end=str(end), step=str(step))
        )

    def alerts(self) -> list[dict[str, Any]]:
        """The active (pending or firing) alerts."""
        return list(self.get("alerts")["alerts"])

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.get("rules")["groups"])

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self.get("targets", state="active")["activeTargets"])

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_prometheus(
    config: dict[str, Any], directory: Path, start_timeout_seconds: float = 30.0
) -> PrometheusServer:
    """Start Prometheus with ``config`` (checked by promtool) and its TSDB in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    promtool = shutil.which("promtool")
    if promtool is not None:
        checked = subprocess.run(
            [promtool, "check", "config", str(config_file)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if checked.returncode != 0:
            raise PrometheusError(f"promtool check config:\n{checked.stdout}{checked.stderr}")
    port = free_port()
    command = [
        prometheus_binary(),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
    ]
    with (directory / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = PrometheusServer(port, process, directory)
    try:
        wait_for(lambda: process.poll() is not None or server.ready(), "prometheus to be ready",
                 timeout=start_timeout_seconds)  # fmt: skip
    except BaseException:
        server.stop()
        raise
    if process.poll() is not None:
        raise PrometheusError(
            f"prometheus exited with status {process.returncode}:\n{server.log.read_text()}"
        )
    return server
