"""The systemd units in deploy/systemd, and the daemon's sd_notify protocol (READY, WATCHDOG, STOPPING)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.fleet import REPO, write_config
from tests.harness.services import require_binary
from watcher import sdnotify

UNITS = REPO / "deploy" / "systemd"
SYSTEM_UNIT = UNITS / "pueue-watcher.service"
USER_UNIT = UNITS / "pueue-watcher.user.service"
MAX_EXPOSURE = 2.0


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without systemd's or the watcher's own variables, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PUEUE_WATCHER", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_"))
    }
    return env | {"SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""} | extra


def _installable_copy(unit: Path, directory: Path) -> Path:
    """A copy of ``unit`` whose ExecStart names an executable that exists here (the venv's entry point)."""
    entry = Path(sys.executable).parent / "pueue-watcher"
    binary = str(entry if entry.is_file() else shutil.which("pueue-watcher") or sys.executable)
    text, count = re.subn(r"(?m)^ExecStart=\S+", f"ExecStart={binary}", unit.read_text())
    assert count == 1, f"{unit.name}: expected one ExecStart= line"
    directory.mkdir(parents=True, exist_ok=True)
    copy = directory / "pueue-watcher.service"
    copy.write_text(text)
    return copy


@pytest.mark.parametrize("unit", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_units_verify_clean(unit: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts both units without a single warning."""
    analyze = require_binary("systemd-analyze")
    copy = _installable_copy(unit, tmp_path / "units")
    args = [analyze, "verify", str(copy)]
    env = _clean_env()
    if unit is USER_UNIT:
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700)
        args.insert(1, "--user")
        env |= {"XDG_RUNTIME_DIR": str(runtime)}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=False)
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and not output, f"{unit.name}: rc={proc.returncode}\n{output}"


def test_system_unit_exposure(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=yes` rates the system unit's exposure at 2.0 or lower."""
    analyze = require_binary("systemd-analyze")
    copy = _installable_copy(SYSTEM_UNIT, tmp_path / "units")
    proc = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True, text=True, env=_clean_env(), timeout=60, check=False,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert found, f"no overall exposure line (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    exposure = float(found.group(1))
    print(f"\n{SYSTEM_UNIT.name}: overall exposure {exposure}")
    failing = "\n".join(line for line in proc.stdout.splitlines() if line.startswith("✗"))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}; not hardened:\n{failing}"


def test_unit_timeouts_cover_grace_period() -> None:
    """Both units are Type=notify with a watchdog, and allow at least the default grace_period to stop."""
    from watcher.config import WatcherSection

    grace = float(WatcherSection.model_fields["grace_period"].default)
    for unit in (SYSTEM_UNIT, USER_UNIT):
        settings = dict(re.findall(r"(?m)^(\w+)=(.*)$", unit.read_text()))
        assert settings["Type"] == "notify", unit.name
        assert float(settings["TimeoutStopSec"]) >= grace, unit.name
        assert float(settings["WatchdogSec"]) > 0, unit.name


def test_units_bound_memory_and_tasks() -> None:
    """Both units cap the daemon's memory and tasks, so a runaway is killed and restarted alone."""
    for unit in (SYSTEM_UNIT, USER_UNIT):
        settings = dict(re.findall(r"(?m)^(\w+)=(.*)$", unit.read_text()))
        assert re.fullmatch(r"\d+[MG]", settings["MemoryMax"]), unit.name
        assert 64 <= int(settings["TasksMax"]) <= 4096, unit.name


def _settings(unit: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of ``unit``, each key with its values in order."""
    found: dict[str, list[str]] = {}
    for key, value in re.findall(r"(?m)^(\w+)=(.*)$", unit.read_text()):
        found.setdefault(key, []).append(value)
    return found


def test_units_bind_only_the_metrics_port() -> None:
    """Both units let the daemon bind() the default metrics port and no other (port 0 stays allowed)."""
    from watcher.config import MetricsSection

    port = str(MetricsSection.model_fields["listen"].default).rpartition(":")[2]
    for unit in (SYSTEM_UNIT, USER_UNIT):
        settings = _settings(unit)
        assert settings["SocketBindAllow"] == [f"tcp:{port}"], unit.name
        assert settings["SocketBindDeny"] == ["any"], unit.name


@pytest.mark.parametrize("unit", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_units_hand_secrets_over_as_credentials(
    unit: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit loads a directory of credentials; named the way systemd names them (ID + "_" + file name),
    a file ``clickhouse`` there reaches the configuration as a SecretStr. EnvironmentFile= stays optional."""
    from pydantic import SecretStr

    from watcher.config import settings_from_mapping
    from watcher.credentials import ENV_DIRECTORY

    settings = _settings(unit)
    (load,) = settings["LoadCredential"]
    credential_id, _, source = load.partition(":")
    assert source.endswith("/pueue-watcher/credentials"), load
    assert all(value.startswith("-") for value in settings["EnvironmentFile"]), unit.name
    # What systemd does at start (systemd.exec(5), LoadCredential= of a directory), in a temporary directory.
    given = tmp_path / "credentials"
    given.mkdir(mode=0o700)
    secret = "pw-from-" + unit.stem
    document = [{"name": "main", "host": "127.0.0.1", "password": secret}]
    (given / f"{credential_id}_clickhouse").write_text(json.dumps(document) + "\n")
    monkeypatch.setenv(ENV_DIRECTORY, str(given))
    monkeypatch.delenv("PUEUE_WATCHER__CLICKHOUSE", raising=False)
    (clickhouse,) = settings_from_mapping({}).clickhouse
    assert isinstance(clickhouse.password, SecretStr)
    assert clickhouse.password.get_secret_value() == secret


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield sock, path


def _receive(sock: socket.socket, deadline: float) -> str:
    sock.settimeout(max(0.05, deadline - time.monotonic()))
    return sock.recv(4096).decode()


def test_daemon_speaks_sd_notify(tmp_path: Path, notify_socket: tuple[socket.socket, Path]) -> None:
    """The real daemon sends READY=1, then WATCHDOG=1 every half WATCHDOG_USEC, then STOPPING=1 on SIGTERM."""
    sock, path = notify_socket
    config = write_config(
        tmp_path / "c.toml",
        [{"name": "local", "transport": "local", "pueue": str(tmp_path / "missing" / "pueue")}],
        watcher={"poll_interval": "1s", "state_path": str(tmp_path / "state.db")},
        metrics={"listen": ""},
    )
    env = _clean_env(NOTIFY_SOCKET=str(path), WATCHDOG_USEC="1000000", PYTHONUNBUFFERED="1")
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "-c", str(config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env,
        )  # fmt: skip
    received: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while received.count("WATCHDOG=1") < 2:
            try:
                received.append(_receive(sock, deadline))
            except TimeoutError:
                pytest.fail(f"got {received} within 30s; daemon log:\n{log.read_text()[-3000:]}")
        assert received[0] == "READY=1", received
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while "STOPPING=1" not in received:
            try:
                received.append(_receive(sock, deadline))
            except TimeoutError:
                pytest.fail(f"no STOPPING=1 after SIGTERM: {received}\n{log.read_text()[-3000:]}")
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, f"exit {code}:\n{log.read_text()[-3000:]}"
    assert received.count("READY=1") == 1, received
    assert received[-1] == "STOPPING=1", received


def test_sdnotify_without_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without NOTIFY_SOCKET notify() is a no-op, and the watchdog only applies to the PID it names."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "120000000")
    assert sdnotify.watchdog_interval() == 120.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 120.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", "")
    monkeypatch.setenv("WATCHDOG_USEC", "garbage")
    assert sdnotify.watchdog_interval() is None


def test_sdnotify_sockets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """notify() reaches a path or an @abstract socket, and a dead socket returns False instead of raising."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "n.sock"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "n.sock"))
        assert sdnotify.notify("STATUS=path") is True
        assert sock.recv(100) == b"STATUS=path"
    name = f"pueue-watcher-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STATUS=abstract") is True
        assert sock.recv(100) == b"STATUS=abstract"
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert sdnotify.notify("WATCHDOG=1") is False
    assert sdnotify.notify("WATCHDOG=1") is False
