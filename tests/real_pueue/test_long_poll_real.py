"""Issue 16 against real pueued 4.0.4 and 3.4.1, both layouts, locally and over a real sshd: at a
five-minute poll interval, phases that end between two polls are reported within seconds (the long poll).

Phases of 3 to 12 s already running when the daemon starts, and one added after it started, are each
reported once; the figures (seconds from the last task's end to the record) are printed. The issue's bound
(median ≤ 2 s, worst ≤ 5 s) is the benchmark's to state, not a timed assertion here: the test waits for each
record well below the five-minute interval.
"""

from __future__ import annotations

import shlex
import statistics
import time
from pathlib import Path

from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import write_config
from tests.real_pueue.conftest import WatchedHost

INTERVAL = 300  # seconds: nothing is polled again before the test ends, but through the long poll


def test_phases_ending_between_polls_are_recorded_once_within_seconds(
    watched: WatchedHost, tmp_path: Path
) -> None:
    host = watched.pueue
    lengths = {"p1": 3, "p2": 6, "p3": 12}
    for group, seconds in lengths.items():
        host.group_add(group, 2)
        for _ in range(3):
            host.add(f"sleep {seconds}", group=group)
    config = write_config(
        tmp_path / "watcher.toml",
        [watched.entry()],
        watcher={
            "poll_interval": f"{INTERVAL}s",
            "fast_interval": 0,
            "state_path": str(tmp_path / "state.db"),
        },
        metrics={"listen": ""},
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_for(lambda: daemon.events("started"))
        late = "p4"
        host.group_add(late, 1)
        host.add("sleep 2", group=late)
        groups = [*lengths, late]
        recorded = daemon.wait_for(lambda: _recorded(daemon, groups), timeout=INTERVAL / 2)
        delays = []
        document = host.status()
        for group in groups:
            ends = [t for t in document["tasks"].values() if t["group"] == group]
            last_end = max(_end(host, t) for t in ends)
            delays.append(recorded[group] - last_end)
        print(f"long poll ({watched.config.transport}): seconds from the last task's end to the record: "
              f"{', '.join(f'{d:.1f}' for d in delays)}; median {statistics.median(delays):.1f}, worst "
              f"{max(delays):.1f}")  # fmt: skip
        time.sleep(2)
        assert sorted(e["group"] for e in daemon.events("phase.recorded")) == sorted(groups)
    finally:
        daemon.stop()


def _recorded(daemon: DaemonProcess, groups: list[str]) -> dict[str, float] | None:
    """The wall-clock time each group's phase was recorded, once all are."""
    seen = {e["group"]: _at(e["timestamp"]) for e in daemon.events("phase.recorded")}
    return seen if all(g in seen for g in groups) else None


def _at(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _end(host: object, task: dict[str, object]) -> float:
    """A Done task's end from pueue's own JSON: 3.4.1 keeps it on the task, 4.0.4 inside the Done status."""
    end = task.get("end")
    if not isinstance(end, str):
        status = task["status"]
        assert isinstance(status, dict)
        (inner,) = status.values()
        assert isinstance(inner, dict)
        end = inner.get("end")
    assert isinstance(end, str), task
    return _at(end)


def test_a_dependency_failed_ending_wakes_the_watcher_through_pueues_callback(
    watched: WatchedHost, tmp_path: Path
) -> None:
    """pueued does not save state.json when it marks a dependant DependencyFailed; a `callback` that touches
    the wake marker beside the state file wakes the long poll, and the poll that follows asks pueue itself.
    Recorded once, within seconds, at a five-minute interval."""
    host = watched.pueue
    marker = host.pueue_dir / "pueue-watcher.wake"
    host.stop()
    host.write_config({"daemon": {"callback": f"touch {shlex.quote(str(marker))}"}})
    host.start()
    host.group_add("p2", 1)
    a = host.add("sleep 600", group="p2", label="backfill")
    b = host.add("true", group="p2", after=[a], label="optimize")
    host.wait_for(lambda d: host.task_state(a, d) == "Running")
    config = write_config(
        tmp_path / "watcher.toml",
        [watched.entry()],
        watcher={
            "poll_interval": f"{INTERVAL}s",
            "fast_interval": 0,
            "state_path": str(tmp_path / "state.db"),
        },
        metrics={"listen": ""},
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_for(lambda: daemon.events("started"))
        time.sleep(2)  # the first poll, and the first long poll waiting
        host.pueue("kill", str(a))
        host.wait_for(lambda d: host.task_state(b, d) == "DependencyFailed")
        killed = time.time()
        (record,) = daemon.wait_for(lambda: daemon.events("phase.recorded"), timeout=INTERVAL / 2)
        print(f"long poll ({watched.config.transport}), DependencyFailed through the callback: recorded "
              f"{_at(record['timestamp']) - killed:.1f} s after the dependant failed")  # fmt: skip
        assert (record["group"], record["outcome"]) == ("p2", "failed")
        time.sleep(2)
        assert len(daemon.events("phase.recorded")) == 1
    finally:
        daemon.stop()
