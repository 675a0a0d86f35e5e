"""Shared fixtures: fixture files, real sshd servers, and simulated pueue hosts."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.harness.clickhouse import ClickHouseServer
from tests.harness.services import require_binary
from tests.harness.sshd import ClientKeys, SSHServer

# The repo's own copy of pueue's JSON samples and of the real binaries' captures (captures/VERSION/).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "pueue"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"the pueue fixtures are missing: {FIXTURES}", pytrace=False)
    return FIXTURES


@pytest.fixture(scope="session")
def client_keys(tmp_path_factory: pytest.TempPathFactory) -> ClientKeys:
    return ClientKeys(tmp_path_factory.mktemp("client"))


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    """A real ClickHouse server (Debian's), one per test module."""
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse")).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_ssh_agent(socket_path: Path) -> Iterator[Path]:
    """A real ssh-agent on a socket of its own: what matters is whether a host can reach it at all."""
    agent = require_binary("ssh-agent")
    proc = subprocess.Popen([agent, "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if socket_path.exists():
                break
            time.sleep(0.025)
        yield socket_path
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.fixture
def ssh_agent(tmp_path: Path) -> Iterator[Path]:
    with running_ssh_agent(tmp_path / "agent.sock") as socket_path:
        yield socket_path


@pytest.fixture
def sshd_factory(tmp_path: Path, client_keys: ClientKeys) -> Iterator[SSHFactory]:
    factory = SSHFactory(tmp_path / "sshd", client_keys)
    yield factory
    factory.stop_all()


class SSHFactory:
    def __init__(self, root: Path, keys: ClientKeys) -> None:
        self.root = root
        self.keys = keys
        self.servers: list[SSHServer] = []

    def start(self, env: dict[str, str] | None = None) -> SSHServer:
        server = SSHServer(self.root / f"host{len(self.servers)}", self.keys, dict(env or {})).start()
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say plainly when the real-pueue tier did not run (no binaries here, and not under CI)."""
    from tests.harness.real_pueue import NOT_RUN

    for message in sorted(NOT_RUN):
        terminalreporter.write_line(f"REAL-PUEUE TIER NOT RUN: {message}", yellow=True, bold=True)


@pytest.fixture(scope="session")
def pueued_pid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The pid of a live process named ``pueued`` (a copy of sleep): what the poll script accepts as a daemon
    in tests that lay out pueue's files by hand. A pid file naming any other process reads as "down"."""
    import shutil
    import subprocess

    binary = tmp_path_factory.mktemp("fake-pueued") / "pueued"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    proc = subprocess.Popen([binary, "3600"])
    yield proc.pid
    proc.kill()
    proc.wait()
