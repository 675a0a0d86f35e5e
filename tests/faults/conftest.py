"""Fixtures of the fault suite, and its printed summary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import running_ssh_agent
from tests.faults.hostile_fleet import fleet, rss_kib
from tests.faults.ledger import Ledger
from tests.harness.sshd import ClientKeys

_LEDGER = Ledger()
SUMMARY = Path(__file__).resolve().parents[2] / "build" / "faults-summary.json"


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return _LEDGER


@pytest.fixture(scope="session")
def idle_rss(tmp_path_factory: pytest.TempPathFactory, client_keys: ClientKeys) -> float:
    """The RSS (MiB) of the daemon watching the honest host alone, after a few polls."""
    root = tmp_path_factory.mktemp("idle")
    with running_ssh_agent(root / "agent.sock") as agent, fleet(root / "fleet", [], agent, client_keys,
                                                                with_hostile=False) as idle:  # fmt: skip
        idle.wait_polls("honest", 5)
        assert idle.daemon is not None and idle.daemon.proc is not None
        return rss_kib(idle.daemon.proc.pid, "VmRSS") / 1024


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Path]:
    with running_ssh_agent(tmp_path / "agent.sock") as socket_path:
        yield socket_path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _LEDGER.faults and not _LEDGER.hostile_inputs_tried:
        return
    terminalreporter.section("fault injection summary")
    terminalreporter.write_line(_LEDGER.summary_line())
    by_kind: dict[str, list[int]] = {}
    for entry in _LEDGER.faults:
        counts = by_kind.setdefault(str(entry["fault"]), [0, 0, 0])
        counts[0] += int(str(entry["count"]))
        counts[1] += int(str(entry["count"])) if entry["survived"] else 0
        counts[2] += int(str(entry.get("lost", 0)))
    for kind, (injected, survived, lost) in sorted(by_kind.items()):
        terminalreporter.write_line(f"  {kind}: injected {injected}, survived {survived}, lost {lost}")
    if _LEDGER.figures:
        terminalreporter.write_line("hostile hosts, what each case cost the watcher:")
        for figures in _LEDGER.figures:
            terminalreporter.write_line(f"  {figures['line']}")
    _LEDGER.write(SUMMARY)
    terminalreporter.write_line(f"written to {SUMMARY}")
