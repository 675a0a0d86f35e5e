"""Adaptive polling decisions and hygiene plans, on hand-made snapshots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from watcher.config import HygieneSection, WatcherSection
from watcher.hygiene import Hygiene
from watcher.phases.tracker import GroupTrack, OpenPhase
from watcher.poll.poller import PollResult
from watcher.pueue.model import Group, Result, Snapshot, Status, Task
from watcher.schedule import next_interval

NOW = datetime(2026, 3, 1, tzinfo=UTC)
SETTINGS = WatcherSection(poll_interval=300, fast_interval=5)


def t(
    i: int, status: Status, result: Result | None = None, group: str = "g", end_ago: float | None = None
) -> Task:
    end = None if end_ago is None else NOW - timedelta(seconds=end_ago)
    return Task.of(i, NOW - timedelta(days=1), group, f"t{i}", status, result, None, None, end)


def snap(*tasks: Task, status: str = "Running", parallel: int = 2) -> Snapshot:
    groups = {task.group: Group(task.group, status, parallel) for task in tasks} or {
        "g": Group("g", status, 2)
    }
    return Snapshot(groups=groups, tasks=tuple(tasks))


def test_normal_interval_while_tasks_wait() -> None:
    s = snap(t(0, Status.RUNNING), t(1, Status.RUNNING), t(2, Status.QUEUED))
    assert next_interval(s, SETTINGS, NOW) == 300


def test_fast_interval_in_the_last_wave() -> None:
    """Nothing waits to start any more: the group can complete at any moment."""
    s = snap(t(0, Status.DONE, Result.SUCCESS, end_ago=4000), t(1, Status.RUNNING))
    assert next_interval(s, SETTINGS, NOW) == 5


def test_fast_interval_when_the_eta_is_shorter_than_the_interval() -> None:
    done = [t(i, Status.DONE, Result.SUCCESS, end_ago=10 * i) for i in range(1, 30)]
    s = snap(*done, t(100, Status.RUNNING), t(101, Status.RUNNING), t(102, Status.QUEUED))
    assert next_interval(s, SETTINGS, NOW) == 5


def test_paused_and_finished_groups_do_not_speed_up() -> None:
    assert next_interval(snap(t(0, Status.RUNNING), status="Paused"), SETTINGS, NOW) == 300
    assert next_interval(snap(t(0, Status.DONE, Result.SUCCESS, end_ago=5)), SETTINGS, NOW) == 300
    off = WatcherSection(poll_interval=300, fast_interval=0)
    assert next_interval(snap(t(0, Status.RUNNING)), off, NOW) == 300


def result_of(snapshot: Snapshot, size: int) -> PollResult:
    return PollResult("h", NOW, 0.1, snapshot=snapshot, state_file_bytes=size)


def test_hygiene_plans_only_recorded_complete_groups() -> None:
    """Complete and recorded (no open phase): cleaned. Unfinished, or not yet on record: untouched."""
    s = snap(
        t(0, Status.DONE, Result.SUCCESS, group="done"),
        t(1, Status.DONE, Result.FAILED, group="done"),
        t(2, Status.DONE, Result.SUCCESS, group="busy"),
        t(3, Status.RUNNING, group="busy"),
        t(4, Status.DONE, Result.SUCCESS, group="unrecorded"),
    )
    tracks = {
        "done": GroupTrack(),
        "busy": GroupTrack(),
        "unrecorded": GroupTrack(phase=OpenPhase("x", 0, {})),
    }
    plan = Hygiene(HygieneSection(max_state_bytes=1000)).plan("h", result_of(s, 5000), tracks, NOW)
    assert plan is not None
    assert plan.groups == ["done"]
    assert plan.mode == "successful"
    assert plan.removed == {"done": {"success": 1}}
    assert plan.failed_labels == {}
    everything = Hygiene(HygieneSection(max_state_bytes=1000, clean="all")).plan(
        "h", result_of(s, 5000), tracks, NOW
    )
    assert everything is not None
    assert everything.removed == {"done": {"success": 1, "failed": 1}}
    assert everything.failed_labels == {"done": ["t1"]}


def test_hygiene_below_threshold_or_off_does_nothing() -> None:
    s = snap(t(0, Status.DONE, Result.SUCCESS))
    tracks = {"g": GroupTrack()}
    assert Hygiene(HygieneSection(max_state_bytes=1000)).plan("h", result_of(s, 999), tracks, NOW) is None
    assert (
        Hygiene(HygieneSection(max_state_bytes=1000, clean="off")).plan("h", result_of(s, 9999), tracks, NOW)
        is None
    )
