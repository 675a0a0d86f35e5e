"""End to end: the daemon (``run`` and ``once``) against simulated pueue hosts behind real sshd.

Completions are counted by event id in what the daemon delivered (its log, the console sink) and in
``history``: each phase must appear exactly once, across kill -9, restarts and ``pueue clean``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SSHFactory
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import sim_env, sim_host, ssh_entry, watcher, write_config
from tests.pueue_sim.scenario import SimHost

pytestmark = pytest.mark.integration


@pytest.fixture
def host(tmp_path: Path) -> Iterator[SimHost]:
    with sim_host(tmp_path / "sim", "v4") as sim:
        sim.pueue("group", "add", "btc-yearly", "-p", "3", check=True)
        yield sim


@pytest.fixture
def config(tmp_path: Path, sshd_factory: SSHFactory, host: SimHost) -> Path:
    server = sshd_factory.start(sim_env(host))
    return write_config(
        tmp_path / "c.toml",
        [ssh_entry("bigblack", server, host, groups=["btc-*"])],
        watcher={"poll_interval": "1s", "fast_interval": "0.5s", "state_path": str(tmp_path / "state.db")},
        metrics={"listen": ""},
    )


@pytest.fixture
def daemon(tmp_path: Path, config: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(config, tmp_path / "daemon.log")
    yield process
    process.stop()


def once(config: Path) -> list[dict[str, Any]]:
    proc = watcher("once", "--json", "-c", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def history(config: Path) -> list[dict[str, Any]]:
    proc = watcher("history", "--json", "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def years(sim: SimHost, names: list[str]) -> list[int]:
    return [sim.add_gated(name, group="btc-yearly", label=name) for name in names]


def finish(sim: SimHost, names: list[str], ids: list[int], exit_code: int = 0) -> None:
    for name in names:
        sim.finish(name, exit_code)
    for task_id in ids:
        sim.wait_for_status(task_id, "Done")


def test_once_fires_a_completion_exactly_once(config: Path, host: SimHost) -> None:
    """Active at the first cycle, complete at the second: one phase.completed; a third cycle adds nothing."""
    ids = years(host, ["y2021", "y2022"])
    assert once(config) == []
    finish(host, ["y2021"], ids[:1])
    finish(host, ["y2022"], ids[1:], exit_code=2)
    (event,) = once(config)
    assert event["event"] == "phase.completed"
    assert (event["host"], event["group"], event["outcome"]) == ("bigblack", "btc-yearly", "failed")
    assert event["counts"] == {"failed": 1, "success": 1}
    assert event["failed_labels"] == ["y2022"]
    assert set(event) >= {"id", "at", "started", "completed", "duration_seconds", "summary"}
    assert once(config) == []
    (phase,) = history(config)
    assert phase["status"] == "completed"
    assert phase["outcome"] == "failed"
    table = watcher("history", "-c", str(config)).stdout
    assert "btc-yearly" in table
    assert "failed" in table


def test_first_run_records_complete_groups_silently(config: Path, host: SimHost) -> None:
    """Groups already complete when the store is empty are history, not news."""
    ids = years(host, ["y2019"])
    finish(host, ["y2019"], ids)
    assert once(config) == []
    assert [p["status"] for p in history(config)] == ["completed"]


def polled_since_start(daemon: DaemonProcess, start: int) -> bool:
    """Whether the daemon's log holds its ``start``-th `started` line (1 is the first), and after it a `cycle`
    summary line that counts a successful poll."""
    lines = daemon.lines()
    starts = [i for i, line in enumerate(lines) if line.get("event") == "started"]
    return len(starts) >= start and any(
        line.get("event") == "cycle" and line.get("ok", 0) >= 1 for line in lines[starts[start - 1] :]
    )


def test_kill_9_and_restart_do_not_repeat_a_completion(
    config: Path, host: SimHost, daemon: DaemonProcess
) -> None:
    """The daemon delivers the completion; kill -9; a restarted daemon does not deliver it again."""
    ids = years(host, ["a", "b"])
    daemon.start()
    daemon.wait_for(lambda: daemon.events("started"))  # the store exists: `history` creates none
    # The phase is open in the store before its tasks finish: its completion is news, delivered once.
    daemon.wait_for(lambda: [p["status"] for p in history(config)] == ["open"])
    finish(host, ["a", "b"], ids)
    daemon.wait_for(lambda: daemon.events("phase.completed"))
    daemon.kill()
    daemon.start()
    # The restarted daemon has polled the host (a summary line of its own counts a good poll), and so has seen
    # the completed phase again.
    daemon.wait_for(lambda: polled_since_start(daemon, 2))
    assert daemon.terminate() == 0
    delivered = Counter(e["id"] for e in daemon.events("phase.completed"))
    assert list(delivered.values()) == [1]
    assert len(history(config)) == 1


def test_completion_while_down_fires_once_after_restart(
    config: Path, host: SimHost, daemon: DaemonProcess
) -> None:
    ids = years(host, ["a", "b"])
    daemon.start()
    daemon.wait_for(lambda: daemon.events("started"))  # the store exists: `history` creates none
    daemon.wait_for(lambda: any(p["status"] == "open" for p in history(config)))
    assert daemon.terminate() == 0
    finish(host, ["a", "b"], ids)
    daemon.start()
    daemon.wait_for(lambda: daemon.events("phase.completed"))
    assert daemon.terminate() == 0
    assert len(daemon.events("phase.completed")) == 1
    assert [p["status"] for p in history(config)] == ["completed"]


def test_appended_tasks_start_a_second_phase(config: Path, host: SimHost) -> None:
    first = years(host, ["p1-a"])
    once(config)
    finish(host, ["p1-a"], first)
    assert len(once(config)) == 1
    second = years(host, ["p2-a", "p2-b"])
    assert once(config) == []
    finish(host, ["p2-a", "p2-b"], second)
    (event,) = once(config)
    assert event["counts"] == {"success": 2}
    assert once(config) == []
    assert [p["tasks"] for p in history(config)] == [2, 1]


def test_clean_mid_phase_fires_nothing_false(config: Path, host: SimHost) -> None:
    """`pueue clean` removes the finished tasks of a running phase: no completion until the rest is done."""
    ids = years(host, ["a", "b", "c", "d"])
    once(config)
    finish(host, ["a"], ids[:1])
    assert once(config) == []  # seen done: its result is known
    host.pueue("clean", "-g", "btc-yearly", check=True)
    assert once(config) == []
    finish(host, ["b"], ids[1:2])
    host.pueue("clean", "-g", "btc-yearly", check=True)  # done and cleaned between two polls: result unseen
    assert once(config) == []
    finish(host, ["c", "d"], ids[2:])
    (event,) = once(config)
    assert event["counts"] == {"success": 3, "removed": 1}
    assert event["outcome"] == "success"
    host.pueue("clean", check=True)
    assert once(config) == []


def test_sigterm_during_a_poll_exits_0_and_loses_nothing(
    tmp_path: Path, sshd_factory: SSHFactory, host: SimHost
) -> None:
    """SIGTERM while a poll hangs: the daemon exits 0 within its grace period; what was committed stays."""
    ids = years(host, ["a"])
    finish(host, ["a"], ids)
    server = sshd_factory.start(sim_env(host))
    slow = tmp_path / "slow-pueue"
    slow.write_text("#!/bin/sh\nsleep 60\n")
    slow.chmod(0o755)
    config = write_config(
        tmp_path / "sig.toml",
        [
            ssh_entry("bigblack", server, host),
            ssh_entry("slow", server, None, pueue=str(slow), read_state_file=False),
        ],
        watcher={"poll_interval": "1s", "state_path": str(tmp_path / "sig.db"), "grace_period": "2s",
                 "host_timeout": "120s"},
        metrics={"listen": ""},
    )  # fmt: skip
    process = DaemonProcess(config, tmp_path / "sig.log").start()
    try:
        process.wait_for(lambda: process.events("phase.recorded"))
        assert process.terminate(timeout=15) == 0
    finally:
        process.stop()
    assert process.events("stopped")
    assert [p["status"] for p in history(config)] == ["completed"]


def test_hygiene_cleans_a_large_state(tmp_path: Path, sshd_factory: SSHFactory, host: SimHost) -> None:
    """Above the threshold, complete groups are cleaned (successful tasks only by default); unfinished groups
    are untouched, history keeps the phase, and the state file shrinks."""
    host.pueue("group", "add", "p2", check=True)
    ids = years(host, ["a", "b"])
    running = host.add_gated("long", group="p2", label="long")
    finish(host, ["a", "b"], ids)
    host.wait_for_status(running, "Running")
    server = sshd_factory.start(sim_env(host))
    config = write_config(
        tmp_path / "h.toml",
        [ssh_entry("bigblack", server, host)],
        watcher={"state_path": str(tmp_path / "h.db")},
        hygiene={"max_state_bytes": 1000},
        metrics={"listen": ""},
    )
    once(config)  # first run: records btc-yearly as complete, p2 as open; then cleans btc-yearly
    state = host.state()
    groups = {t["group"] for t in state["tasks"].values()}
    assert groups == {"p2"}, "only the complete group is cleaned"
    phases = {p["group"]: p for p in history(config)}
    assert phases["btc-yearly"]["status"] == "completed"
    assert phases["btc-yearly"]["counts"] == {"success": 2}
    assert phases["p2"]["status"] == "open"
    host.finish("long")
    host.wait_for_status(running, "Done")


def test_hygiene_dry_run_changes_nothing(tmp_path: Path, sshd_factory: SSHFactory, host: SimHost) -> None:
    ids = years(host, ["a"])
    finish(host, ["a"], ids)
    server = sshd_factory.start(sim_env(host))
    config = write_config(
        tmp_path / "d.toml",
        [ssh_entry("bigblack", server, host)],
        watcher={"state_path": str(tmp_path / "d.db")},
        hygiene={"max_state_bytes": 1000, "dry_run": True},
        metrics={"listen": ""},
    )
    once(config)
    assert len(host.state()["tasks"]) == 1
