"""Shared fixtures: fixture files, real sshd servers, and simulated pueue hosts; the Hypothesis profiles and
the marking of the tests that start services (the fast tier, ``./dev test fast``, leaves those out)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import settings

from tests.harness.clickhouse import ClickHouseServer
from tests.harness.services import FAST_TIER, require_binary
from tests.harness.sshd import ClientKeys, SSHServer

# Hypothesis profiles. "full" (the default: CI and `./dev test`) keeps each property's own example count;
# "fast" runs at most FAST_EXAMPLES of each. PUEUE_WATCHER_TEST_TIER=fast (what `./dev test fast` sets) loads
# "fast"; pytest's --hypothesis-profile chooses either as well.
FAST_EXAMPLES = 100
settings.register_profile("full", settings.get_profile("default"))
settings.register_profile("fast", max_examples=FAST_EXAMPLES)
settings.load_profile("fast" if FAST_TIER else "full")


def examples(count: int) -> int:
    """A property's own example count, cut to FAST_EXAMPLES under the fast profile. The profile alone cannot
    do it: a count given to ``@settings`` wins over any profile. Read at import, so after --hypothesis-profile
    has loaded its profile (pytest imports test modules after its configure step)."""
    return min(count, FAST_EXAMPLES) if settings.get_current_profile_name() == "fast" else count


# Fixtures that start a service (sshd, ClickHouse, or a daemon that needs one): a test using any of them is
# marked `integration`, as are the modules that start services themselves (they say so with `pytestmark`)
# and the real-pueue tier. tests/harness/services.py refuses to start a service in the fast tier, so a test
# that starts one without the mark fails there instead of slowing it down.
SERVICE_FIXTURES = frozenset({"sshd_factory", "clickhouse", "idle_rss"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    real_pueue = Path(__file__).resolve().parent / "real_pueue"
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SERVICE_FIXTURES or real_pueue in item.path.parents:
            item.add_marker(pytest.mark.integration)

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
