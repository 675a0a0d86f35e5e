"""The watcher against real pueued 4.0.4 and 3.4.1, both layouts, on this machine and over a real sshd."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import watcher, write_config
from tests.real_pueue.conftest import WatchedHost
from watcher.gates import apply
from watcher.poll.poller import HostPoller
from watcher.pueue.model import COUNT_KEYS, Snapshot, count_states
from watcher.records import GateAction

_KEY = {"Success": "success", "Failed": "failed", "Killed": "killed", "DependencyFailed": "dependency_failed",
        "FailedToSpawn": "failed_to_spawn", "Errored": "errored", "Running": "running", "Queued": "queued",
        "Stashed": "stashed", "Paused": "paused", "Locked": "locked"}  # fmt: skip


def truth(watched: WatchedHost) -> dict[str, dict[str, int]]:
    """Counts per group from `pueue status --json`, read with the test's own reading of pueue's JSON."""
    host = watched.pueue
    document = host.status()
    counts = {g: dict.fromkeys(COUNT_KEYS, 0) for g in document["groups"]}
    for task in document["tasks"].values():
        counts[task["group"]][_KEY[host.task_state(task["id"], document)]] += 1
    return counts


def seen(snapshot: Snapshot | None) -> dict[str, dict[str, int]]:
    assert snapshot is not None
    return {g: counts(snapshot, g) for g in snapshot.groups}


def counts(snapshot: Snapshot | None, group: str) -> dict[str, int]:
    assert snapshot is not None
    return count_states(snapshot.group_tasks(group))


async def test_every_status_kind_is_counted_right(
    watched: WatchedHost, poller: HostPoller, tmp_path: Path
) -> None:
    """Success, failed, killed, dependency-failed (never saved to the file), failed-to-spawn, running, queued,
    stashed and paused tasks: the watcher's counts per group equal pueue's own."""
    host = watched.pueue
    host.group_add("done", 1)
    ok, bad = host.add("true", group="done"), host.add("exit 3", group="done")
    host.wait_for(lambda d: {host.task_state(ok, d), host.task_state(bad, d)} == {"Success", "Failed"})
    slow = host.add("sleep 60", group="done")
    host.wait_for(lambda d: host.task_state(slow, d) == "Running")
    host.pueue("kill", str(slow))
    orphan = host.add("true", group="done", after=[bad])
    host.wait_for(
        lambda d: host.task_state(orphan, d) == "DependencyFailed" and host.task_state(slow, d) == "Killed"
    )
    host.group_add("spawn", 1)
    host.pueue("pause", "--group=spawn")
    workdir = tmp_path / "vanishing"
    workdir.mkdir()
    spawn = host.pueue("add", "--group=spawn", "-w", str(workdir), "--", "true").stdout
    workdir.rmdir()
    host.pueue("start", "--group=spawn")
    host.wait_for(
        lambda d: any(host.task_state(int(t), d) == "FailedToSpawn" for t in d["tasks"]), what=spawn
    )
    host.group_add("live", 1)
    running = host.add("sleep 600", group="live")
    host.add("sleep 600", group="live")
    host.add("sleep 600", group="live", stashed=True)
    host.group_add("frozen", 1)
    frozen = host.add("sleep 600", group="frozen")
    host.wait_for(lambda d: host.task_state(running, d) == host.task_state(frozen, d) == "Running")
    host.pueue("pause", str(frozen))
    host.wait_for(lambda d: host.task_state(frozen, d) == "Paused")

    result = await poller.poll()
    assert result.ok, result.error
    expected = truth(watched)
    assert seen(result.snapshot) == expected
    assert {k for c in expected.values() for k, n in c.items() if n} >= {
        "success", "failed", "killed", "dependency_failed", "failed_to_spawn", "running", "queued", "stashed",
        "paused"}  # fmt: skip


async def test_a_phase_ending_in_dependency_failed_is_seen_within_two_polls(
    watched: WatchedHost, poller: HostPoller
) -> None:
    """p2 = A (sleep) and B (--after A); `pueue kill A`: pueued marks B DependencyFailed and does not save.
    The watcher confirms the stale file with `pueue status` and sees p2 complete by the second poll."""
    host = watched.pueue
    host.group_add("p2", 1)
    a = host.add("sleep 600", group="p2")
    b = host.add("true", group="p2", after=[a])
    host.wait_for(lambda d: host.task_state(a, d) == "Running")
    first = await poller.poll()
    assert first.ok and first.snapshot is not None
    assert counts(first.snapshot, "p2")["queued"] == 1
    host.pueue("kill", str(a))
    host.wait_for(lambda d: host.task_state(b, d) == "DependencyFailed")
    assert host.task_state(b, host.file_state()) == "Queued"  # the file lags: pueued did not save
    polls = [await poller.poll() for _ in range(2)]
    assert all(p.ok for p in polls)
    last = polls[-1].snapshot
    assert last is not None
    assert counts(last, "p2")["dependency_failed"] == 1
    assert counts(last, "p2")["queued"] == 0
    assert watched.calls("status") == 1  # one confirmation, no more
    # The file still says Queued, and nothing changes: later polls trust the confirmation, at no cost.
    for _ in range(3):
        again = await poller.poll()
        assert again.snapshot is not None and counts(again.snapshot, "p2")["dependency_failed"] == 1
    assert watched.calls("status") == 1


async def test_a_steady_queue_costs_no_pueue_status(watched: WatchedHost, poller: HostPoller) -> None:
    """Groups running normally, waiting on work in progress, or paused: the state file alone answers, and an
    unchanged poll moves at most 4 KB."""
    host = watched.pueue
    host.group_add("steady", 2)
    first = [host.add("sleep 600", group="steady") for _ in range(4)]
    host.group_add("waiting", 1)
    host.add("true", group="waiting", after=[first[0]])
    host.group_add("held", 1)
    host.pueue("pause", "--group=held")
    host.add("true", group="held")
    host.wait_for(lambda d: [host.task_state(t, d) for t in first[:2]] == ["Running", "Running"])
    results = [await poller.poll() for _ in range(6)]
    assert all(r.ok for r in results), [r.error for r in results]
    assert watched.calls("status") == 0
    assert results[0].source in ("state", "handoff")
    assert [r.source for r in results[1:]] == ["unchanged"] * 5
    assert max(r.wire_bytes for r in results[1:]) <= 4096


async def test_gates_start_and_hold_real_groups(watched: WatchedHost) -> None:
    """A gate starts a paused group; a hold pauses the next group with `pause --wait`: its running task keeps
    running (plain `pause -g` would SIGSTOP it) and its queued one waits."""
    host = watched.pueue
    host.group_add("p1", 1)
    host.group_add("p2", 1)
    host.pueue("pause", "--group=p2")
    queued = host.add("sleep 600", group="p2")
    host.group_add("p3", 1)
    busy, waiting = host.add("sleep 600", group="p3"), host.add("sleep 600", group="p3")
    host.wait_for(lambda d: host.task_state(busy, d) == "Running")
    transport = watched.transport()
    try:
        action = GateAction(phase_id="x", host="real", after="p1", start="p2", status="pending")
        started = await apply(watched.config, transport, action, True, "p1 complete", timeout=30)
        assert started.status == "started"
        document = host.wait_for(lambda d: host.task_state(queued, d) == "Running")
        assert document["groups"]["p2"]["status"] == "Running"
        hold = GateAction(phase_id="y", host="real", after="p1", start="p3", status="pending")
        held = await apply(watched.config, transport, hold, False, "check failed", timeout=30)
        assert held.status == "held"
        document = host.status()
        assert document["groups"]["p3"]["status"] == "Paused"
        assert host.task_state(busy, document) == "Running"
        assert host.task_state(waiting, document) == "Queued"
        missing = GateAction(phase_id="z", host="real", after="p1", start="nope", status="pending")
        failed = await apply(watched.config, transport, missing, True, "p1 complete", timeout=30)
        assert failed.status == "error"
        assert "nope" in (failed.reason or "") and "\n" not in (failed.reason or "")
    finally:
        await transport.close()


def _config(watched: WatchedHost, tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "watcher.toml",
        [watched.entry()],
        watcher={"poll_interval": "2s", "state_path": str(tmp_path / "state.db")},
        metrics={"listen": ""},
    )


def test_once_reports_the_dependency_failed_phase_exactly_once(watched: WatchedHost, tmp_path: Path) -> None:
    """`once` is a fresh process each time, with no earlier poll to compare with: it confirms a suspect file
    at once, and the store keeps the completion to one report across runs."""
    host = watched.pueue
    config = _config(watched, tmp_path)
    host.group_add("p2", 1)
    a = host.add("sleep 600", group="p2", label="backfill")
    b = host.add("true", group="p2", after=[a], label="optimize")
    host.wait_for(lambda d: host.task_state(a, d) == "Running")
    assert _once(config) == []
    host.pueue("kill", str(a))
    host.wait_for(lambda d: host.task_state(b, d) == "DependencyFailed")
    events = _once(config) + _once(config) + _once(config)
    completed = [e for e in events if e["event"] == "phase.completed"]
    assert len(completed) == 1, events
    assert completed[0]["group"] == "p2" and completed[0]["outcome"] == "failed"
    assert completed[0]["counts"] == {"killed": 1, "dependency_failed": 1}
    assert sorted(completed[0]["failed_labels"]) == ["backfill", "optimize"]


def test_the_daemon_reports_it_within_two_poll_intervals(watched: WatchedHost, tmp_path: Path) -> None:
    """At poll_interval = 2s the daemon's poll count from the kill to the completion is at most two."""
    host = watched.pueue
    host.group_add("p2", 1)
    a = host.add("sleep 600", group="p2")
    b = host.add("true", group="p2", after=[a])
    host.wait_for(lambda d: host.task_state(a, d) == "Running")
    daemon = DaemonProcess(_config(watched, tmp_path), tmp_path / "daemon.log").start()
    try:
        daemon.wait_for(lambda: daemon.events("cycle"))
        host.pueue("kill", str(a))
        host.wait_for(lambda d: host.task_state(b, d) == "DependencyFailed")
        polls_before = _polls(daemon)
        daemon.wait_for(lambda: daemon.events("phase.recorded"))
        # A cycle line sums the polls of one interval; the kill may land anywhere in the first.
        assert _polls(daemon) - polls_before <= 2 + 1
        recorded = daemon.events("phase.recorded")
        assert [(r["group"], r["outcome"]) for r in recorded] == [("p2", "failed")]
        assert len(daemon.events("poll.confirmed")) == 1
    finally:
        daemon.stop()


def _polls(daemon: DaemonProcess) -> int:
    return sum(int(line.get("polls", 0)) for line in daemon.events("cycle"))


def _once(config: Path) -> list[dict[str, Any]]:
    proc = watcher("once", "--json", "-c", str(config), env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events: list[dict[str, Any]] = json.loads(proc.stdout)
    return events


async def test_a_daemon_that_is_down_is_one_readable_line(watched: WatchedHost, poller: HostPoller) -> None:
    """SIGKILLed (its pid file stays, naming a dead pid) or stopped: the poll fails with pueue's own error as
    one line, with no colour codes or backtrace section (4.0.4 prints both, even on a pipe)."""
    host = watched.pueue
    assert (await poller.poll()).ok
    host.crash()
    assert host.pid_file.exists()
    killed = await poller.poll()
    host.start()
    assert (await poller.poll()).ok
    host.stop()
    stopped = await poller.poll()
    for result in (killed, stopped):
        assert not result.ok and result.error is not None
        assert result.error.startswith("pueue status failed (exit 1): Failed to initialize client")
        assert "\n" not in result.error and "\x1b" not in result.error and "Location" not in result.error
