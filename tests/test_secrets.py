"""Secrets from files (``MARGINWATCH_SECRETS_DIR``, as Compose and Kubernetes mount them),
never on a command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from marginwatch.base.settings import read_settings


def secrets_dir(tmp_path: Path) -> Path:
    (tmp_path / "MARGINWATCH_REDIS_URL").write_text("redis://u:pw-in-a-file@h:1/0\n", "utf-8")
    (tmp_path / "MARGINWATCH_WEBHOOK_SECRET").write_text("hook-secret\n", "utf-8")
    return tmp_path


def test_settings_come_from_files_named_like_their_variables(tmp_path: Path) -> None:
    """Each file is one setting, its trailing newline dropped."""
    settings = read_settings({"MARGINWATCH_SECRETS_DIR": str(secrets_dir(tmp_path))})
    assert (settings.redis_url, settings.webhook_secret) == ("redis://u:pw-in-a-file@h:1/0",
                                                             "hook-secret")  # fmt: skip


def test_config_shows_a_secret_from_a_file_redacted(tmp_path: Path) -> None:
    """``marginwatch config`` reads the directory and prints neither secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARGINWATCH_")}
    env["MARGINWATCH_SECRETS_DIR"] = str(secrets_dir(tmp_path))
    ran = subprocess.run([sys.executable, "-m", "marginwatch", "config"], env=env, text=True,
                         capture_output=True, timeout=60, check=True)  # fmt: skip
    assert "MARGINWATCH_REDIS_URL=redis://u:***@h:1/0" in ran.stdout
    assert "pw-in-a-file" not in ran.stdout
    assert "hook-secret" not in ran.stdout


def test_a_missing_secrets_directory_is_one_line(tmp_path: Path) -> None:
    """Exit 2, the variable and the path named."""
    env = {**os.environ, "MARGINWATCH_SECRETS_DIR": str(tmp_path / "absent")}
    ran = subprocess.run([sys.executable, "-m", "marginwatch", "config"], env=env, text=True,
                         capture_output=True, timeout=60, check=False)  # fmt: skip
    assert ran.returncode == 2
    assert ran.stderr.strip().splitlines() == [
        f"marginwatch: MARGINWATCH_SECRETS_DIR={tmp_path / 'absent'}: not a directory"
    ]
