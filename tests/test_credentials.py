"""Secrets given as systemd credentials ($CREDENTIALS_DIRECTORY) reach the configuration like variables do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from watcher.config import settings_from_mapping
from watcher.credentials import ENV_DIRECTORY
from watcher.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "hunter2-credential"
FILE_CONFIG = {
    "watcher": {"poll_interval": "5m", "state_path": "/var/lib/pueue-watcher/state.db"},
    "hosts": [{"name": "local", "transport": "local"}],
}


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty credentials directory that the configuration reads, as systemd would hand it over."""
    directory = tmp_path / "credentials"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv(ENV_DIRECTORY, str(directory))
    for name in list(os.environ):
        if name.startswith("PUEUE_WATCHER__"):
            monkeypatch.delenv(name)
    return directory


def test_a_credential_reaches_the_config_as_a_secretstr(credentials: Path) -> None:
    """A file named like the variable holds its JSON; the password in it becomes a SecretStr, never shown."""
    entry = {"name": "main", "host": "127.0.0.1", "password": PASSWORD}
    (credentials / "PUEUE_WATCHER__CLICKHOUSE").write_text(json.dumps([entry]) + "\n")
    settings = settings_from_mapping(FILE_CONFIG)
    (clickhouse,) = settings.clickhouse
    assert isinstance(clickhouse.password, SecretStr)
    assert clickhouse.password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert settings.watcher.poll_interval == 300  # the rest of the file is untouched


def test_names_nesting_and_priority_follow_the_environment(
    credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names match without regard to case (a directory loaded as ``PUEUE_WATCHER_:DIR`` gives
    ``PUEUE_WATCHER__file``), ``__`` nests, a section merges with the file, the environment wins, and files
    of other programs are ignored."""
    sink = {"name": "ops", "kind": "webhook", "url": "https://hooks.example/T0K3N", "secret": PASSWORD}
    (credentials / "PUEUE_WATCHER__alerts").write_text(json.dumps([sink]))
    (credentials / "PUEUE_WATCHER__WATCHER__GRACE_PERIOD").write_text("20s\n")
    (credentials / "PUEUE_WATCHER__WATCHER__POLL_INTERVAL").write_text("1m")
    (credentials / "other-service-token").write_bytes(b"\xff not ours, not even UTF-8")
    monkeypatch.setenv("PUEUE_WATCHER__WATCHER__POLL_INTERVAL", "30s")
    settings = settings_from_mapping(FILE_CONFIG)
    (alert,) = settings.alerts
    assert alert.secret is not None and alert.secret.get_secret_value() == PASSWORD
    assert "T0K3N" not in repr(settings)
    assert settings.watcher.grace_period == 20  # from the credential
    assert settings.watcher.poll_interval == 30  # the environment over the credential
    assert settings.watcher.state_path == FILE_CONFIG["watcher"]["state_path"]  # the file under both


def _refusal(credentials: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(FILE_CONFIG)
    message = str(caught.value)
    assert "\n" not in message and PASSWORD not in message
    return message


def test_an_unusable_credential_stops_the_start_in_one_line(credentials: Path, tmp_path: Path) -> None:
    """Bad JSON, a symlink, text that is not UTF-8: one line naming the credential, never a traceback."""
    bad = credentials / "PUEUE_WATCHER__CLICKHOUSE"
    bad.write_text(f'[{{"name": "main", "password": "{PASSWORD}"')
    assert _refusal(credentials).endswith(
        "clickhouse: the value of PUEUE_WATCHER__CLICKHOUSE in a credential is not valid JSON"
    )
    bad.unlink()
    outside = tmp_path / "elsewhere"
    outside.write_text("[]")
    bad.symlink_to(outside)
    assert _refusal(credentials) == (
        f"${ENV_DIRECTORY} ({credentials}): PUEUE_WATCHER__CLICKHOUSE: cannot read it: a symbolic link"
    )
    bad.unlink()
    bad.write_bytes(b"\xff\xfe")
    assert _refusal(credentials).endswith("PUEUE_WATCHER__CLICKHOUSE: not UTF-8 text")


def test_a_bad_credential_through_the_cli(credentials: Path) -> None:
    """``config validate`` with a broken credential exits 2 with one line on stderr."""
    (credentials / "PUEUE_WATCHER__HOSTS").write_text("not json")
    proc = subprocess.run(
        [sys.executable, "-m", "watcher", "config", "validate", str(REPO / "config.toml")],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"config error: {REPO / 'config.toml'}: hosts: the value of PUEUE_WATCHER__HOSTS in a credential "
        "is not valid JSON"
    ], proc.stderr
