"""The phase tracker, table-driven: each case is a sequence of snapshots of one group and what must fire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.conftest import examples
from watcher.phases import tracker
from watcher.phases.tracker import GroupTrack, StepResult, step
from watcher.pueue.model import Result, Status, Task

T0 = datetime(2026, 1, 1, tzinfo=UTC)

# A compact way to write a task: (id, minute created, state) with state one of
# q(ueued) s(tashed) r(unning) p(aused) l(ocked) ok fail kill err spawn dep.
STATES = {
    "q": (Status.QUEUED, None),
    "s": (Status.STASHED, None),
    "r": (Status.RUNNING, None),
    "p": (Status.PAUSED, None),
    "l": (Status.LOCKED, None),
    "ok": (Status.DONE, Result.SUCCESS),
    "fail": (Status.DONE, Result.FAILED),
    "kill": (Status.DONE, Result.KILLED),
    "err": (Status.DONE, Result.ERRORED),
    "spawn": (Status.DONE, Result.FAILED_TO_SPAWN),
    "dep": (Status.DONE, Result.DEPENDENCY_FAILED),
}


def task(spec: tuple[int, int, str] | tuple[int, int, str, int]) -> Task:
    """(id, created minute, state[, end minute]) → a Task. Done tasks end at created+10 unless given."""
    tid, created, state = spec[:3]
    status, result = STATES[state]
    created_at = T0 + timedelta(minutes=created)
    start = (
        created_at + timedelta(minutes=1) if status in (Status.RUNNING, Status.PAUSED, Status.DONE) else None
    )
    end = None
    if status is Status.DONE:
        end = T0 + timedelta(minutes=spec[3]) if len(spec) == 4 else created_at + timedelta(minutes=10)
    exit_code = 1 if result is Result.FAILED else None
    return Task.of(tid, created_at, "g", f"job-{tid}", status, result, exit_code, start, end)


Snap = list[tuple[int, int, str] | tuple[int, int, str, int]]


@dataclass
class Case:
    name: str
    snapshots: list[Snap]
    # per snapshot: the completions fired, as (outcome, {result: count}); None = nothing completes
    fires: list[list[tuple[str, dict[str, int]]]]
    first_run: bool = False
    silent: list[int] | None = None  # snapshot indexes where a completion is recorded without firing


CASES = [
    Case(
        "a group finishes: one completion, when the last task is done",
        [
            [(0, 0, "r"), (1, 0, "q")],
            [(0, 0, "ok"), (1, 0, "r")],
            [(0, 0, "ok"), (1, 0, "ok")],
            [(0, 0, "ok"), (1, 0, "ok")],
        ],
        [[], [], [("success", {"success": 2})], []],
    ),
    Case(
        "failures make the outcome failed, with counts per result",
        [
            [(0, 0, "r"), (1, 0, "r"), (2, 0, "q")],
            [(0, 0, "ok"), (1, 0, "fail"), (2, 0, "kill"), (3, 0, "spawn"), (4, 0, "dep"), (5, 0, "err")],
        ],
        [
            [],
            [
                (
                    "failed",
                    {
                        "success": 1,
                        "failed": 1,
                        "killed": 1,
                        "failed_to_spawn": 1,
                        "dependency_failed": 1,
                        "errored": 1,
                    },
                )
            ],
        ],
    ),
    Case(
        "an empty group is never complete",
        [[], [], [(0, 5, "q")], []],
        [[], [], [], []],
    ),
    Case(
        "a Locked task keeps the phase open",
        [[(0, 0, "ok"), (1, 0, "l")], [(0, 0, "ok"), (1, 0, "ok")]],
        [[], [("success", {"success": 2})]],
    ),
    Case(
        "a paused group with tasks still queued is not complete",
        [
            [(0, 0, "ok"), (1, 0, "p"), (2, 0, "q")],
            [(0, 0, "ok"), (1, 0, "ok"), (2, 0, "q")],
            [(0, 0, "ok"), (1, 0, "ok"), (2, 0, "ok")],
        ],
        [[], [], [("success", {"success": 3})]],
    ),
    Case(
        "stashed tasks keep the phase open",
        [[(0, 0, "ok"), (1, 0, "s")], [(0, 0, "ok"), (1, 0, "ok")]],
        [[], [("success", {"success": 2})]],
    ),
    Case(
        "a daemon restart turns Running into Killed: the phase completes, failed",
        [[(0, 0, "ok"), (1, 0, "r")], [(0, 0, "ok"), (1, 0, "kill")]],
        [[], [("failed", {"success": 1, "killed": 1})]],
    ),
    Case(
        "a daemon restart with queued tasks pauses the group: no completion yet",
        [[(0, 0, "r"), (1, 0, "q")], [(0, 0, "kill"), (1, 0, "q")], [(0, 0, "kill"), (1, 0, "ok")]],
        [[], [], [("failed", {"success": 1, "killed": 1})]],
    ),
    Case(
        "tasks appended to a complete group start a second phase",
        [
            [(0, 0, "ok"), (1, 0, "ok")],
            [(0, 0, "ok"), (1, 0, "ok"), (2, 30, "r")],
            [(0, 0, "ok"), (1, 0, "ok"), (2, 30, "ok")],
        ],
        [[("success", {"success": 2})], [], [("success", {"success": 1})]],
    ),
    Case(
        "pueue clean after completion fires nothing more",
        [[(0, 0, "ok"), (1, 0, "fail")], [(1, 0, "fail")], []],
        [[("failed", {"success": 1, "failed": 1})], [], []],
    ),
    Case(
        "pueue clean mid-phase: no false completion, and the cleaned results still count",
        [
            [(0, 0, "ok"), (1, 0, "r"), (2, 0, "q")],
            [(1, 0, "r"), (2, 0, "q")],
            [(1, 0, "ok"), (2, 0, "r")],
            [(1, 0, "ok"), (2, 0, "ok")],
        ],
        [[], [], [], [("success", {"success": 3})]],
    ),
    Case(
        "pueue remove of a queued task mid-phase: counted as removed, not a failure",
        [[(0, 0, "r"), (1, 0, "q")], [(0, 0, "r")], [(0, 0, "ok")]],
        [[], [], [("success", {"success": 1, "removed": 1})]],
    ),
    Case(
        "ids reused after clean are new tasks (the key includes created_at)",
        [[(0, 0, "ok"), (1, 0, "ok")], [], [(0, 60, "r")], [(0, 60, "fail")]],
        [[("success", {"success": 2})], [], [], [("failed", {"failed": 1})]],
    ),
    Case(
        "a phase that starts and ends between two polls fires once when seen",
        [
            [(0, 0, "ok")],
            [(0, 0, "ok"), (1, 30, "ok"), (2, 30, "fail")],
            [(0, 0, "ok"), (1, 30, "ok"), (2, 30, "fail")],
        ],
        [[("success", {"success": 1})], [("failed", {"success": 1, "failed": 1})], []],
    ),
    Case(
        "complete between polls, then new tasks created after: two phases",
        [[(0, 0, "r")], [(0, 0, "ok", 20), (1, 30, "q")], [(0, 0, "ok", 20), (1, 30, "ok")]],
        [[], [("success", {"success": 1})], [("success", {"success": 1})]],
    ),
    Case(
        "tasks added while the phase still ran join that phase",
        [[(0, 0, "r")], [(0, 0, "ok", 40), (1, 30, "q")], [(0, 0, "ok", 40), (1, 30, "ok")]],
        [[], [], [("success", {"success": 2})]],
    ),
    Case(
        "a task restarted in place (same key, queued again) opens a new phase",
        [[(0, 0, "fail")], [(0, 0, "q")], [(0, 0, "ok")]],
        [[("failed", {"failed": 1})], [], [("success", {"success": 1})]],
    ),
    Case(
        "first run: a group already complete is recorded without firing",
        [
            [(0, 0, "ok"), (1, 0, "fail")],
            [(0, 0, "ok"), (1, 0, "fail")],
            [(0, 0, "ok"), (1, 0, "fail"), (2, 50, "ok")],
        ],
        [[("failed", {"success": 1, "failed": 1})], [], [("success", {"success": 1})]],
        first_run=True,
        silent=[0],
    ),
    Case(
        "first run: a group still active is tracked, and fires when it completes",
        [[(0, 0, "ok"), (1, 0, "r")], [(0, 0, "ok"), (1, 0, "ok")]],
        [[], [("success", {"success": 2})]],
        first_run=True,
    ),
    Case(
        "not the first run: a group first seen complete fires (it finished while we were down)",
        [[(0, 0, "ok"), (1, 0, "ok")]],
        [[("success", {"success": 2})]],
    ),
]


def run(case: Case, *, alert_on_first_sight: bool = False) -> list[StepResult]:
    track = GroupTrack()
    results = []
    for index, snapshot in enumerate(case.snapshots):
        tasks = [task(spec) for spec in snapshot]
        now = T0 + timedelta(hours=index + 1)
        first = case.first_run and index == 0
        results.append(
            step(track, "h", "g", tasks, now, first_sight=first, alert_on_first_sight=alert_on_first_sight)
        )
        track = GroupTrack.decode(track.encode())  # every step goes through persistence, like the daemon
    return results


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tracker(case: Case) -> None:
    """Each snapshot completes exactly the phases the table says, with the right outcome and counts."""
    results = run(case)
    assert len(results) == len(case.fires)
    for index, (result, expected) in enumerate(zip(results, case.fires, strict=True)):
        got = [(r.outcome, r.counts) for r in result.completed]
        assert got == expected, f"snapshot {index}"
        for record in result.completed:
            assert record.fired is not (index in (case.silent or [])), f"snapshot {index}"


def test_every_phase_completes_once_with_a_unique_id() -> None:
    """Across all cases, no phase id completes twice."""
    for case in CASES:
        ids = [r.id for result in run(case) for r in result.completed]
        assert len(ids) == len(set(ids)), case.name


def test_alert_on_first_sight() -> None:
    """`watcher.alert_on_first_sight = true` fires for groups complete at the first run."""
    case = next(c for c in CASES if c.name.startswith("first run: a group already complete"))
    (record,) = run(case, alert_on_first_sight=True)[0].completed
    assert record.fired


def test_summary_fields() -> None:
    """A completion carries the first start, the last end and the failed labels (20 at most, oldest first)."""
    tasks = [task((i, i, "fail" if i % 2 else "ok")) for i in range(50)]
    (record,) = step(GroupTrack(), "h", "g", tasks, T0 + timedelta(days=1)).completed
    assert record.first_start == T0 + timedelta(minutes=1)
    assert record.last_end == T0 + timedelta(minutes=49 + 10)
    assert record.failed_labels == [f"job-{i}" for i in range(1, 41, 2)]
    assert record.tasks == 50
    assert record.counts == {"failed": 25, "success": 25}
    assert record.status == "completed"
    assert record.id == "h/g/0@1767225600000000"


def test_vanished_phase_is_abandoned_not_completed() -> None:
    """Running tasks that finish and are cleaned between two polls: the outcome is unknown; nothing fires."""
    track = GroupTrack()
    step(track, "h", "g", [task((0, 0, "r"))], T0)
    result = step(track, "h", "g", [], T0 + timedelta(hours=1))
    assert result.completed == []
    assert [r.status for r in result.abandoned] == ["abandoned"]
    assert step(track, "h", "g", [], T0 + timedelta(hours=2)).records == []


def test_unchanged_snapshot_changes_nothing() -> None:
    """A snapshot equal to the last one leaves the track as it was (nothing to persist)."""
    track = GroupTrack()
    tasks = [task((0, 0, "r")), task((1, 0, "q"))]
    assert step(track, "h", "g", tasks, T0).changed
    assert not step(track, "h", "g", tasks, T0 + timedelta(minutes=5)).changed


# --- the by-id step against the by-key one (the reference) -----------------------------------------------

_FAR = [
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),  # before datetime's range in UTC
    datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=13))),  # too, an hour later
    datetime.max.replace(tzinfo=UTC),
]
_SNAPSHOTS = st.lists(
    st.lists(
        st.tuples(
            st.integers(0, 6),
            st.integers(0, 40) | st.sampled_from([-1, -2, -3]),  # a minute, or one of _FAR
            st.sampled_from(sorted(STATES)),
            st.integers(0, 60),
        ),
        max_size=6,
        unique_by=lambda spec: spec[0],
    ),
    min_size=1,
    max_size=8,
)


def _tasks(specs: list[tuple[int, int, str, int]]) -> list[Task]:
    tasks = []
    for tid, created, state, end in specs:
        made = task((tid, created, state, end) if STATES[state][0] is Status.DONE else (tid, created, state))
        if created < 0:
            made = msgspec.structs.replace(made, created_at=_FAR[created + 3])
        tasks.append(made)
    return tasks


@settings(max_examples=examples(400), deadline=None)
@given(snapshots=_SNAPSHOTS, first_run=st.booleans())
@example(snapshots=[[(0, -3, "ok", 0)], [(1, -2, "ok", 0)]], first_run=False)  # a watermark before year 1
def test_finding_members_by_id_matches_finding_them_by_key(
    snapshots: list[list[tuple[int, int, str, int]]], first_run: bool
) -> None:
    """Through any sequence of snapshots (ids reused, times out of datetime's range), the step that finds
    members by id gives the records and the track of the step that builds every task's key."""
    ours, reference = GroupTrack(), GroupTrack()
    for index, specs in enumerate(snapshots):
        tasks = _tasks(specs)
        now = T0 + timedelta(hours=index + 1)
        first = first_run and index == 0
        got = step(ours, "h", "g", tasks, now, first_sight=first)
        expected = tracker._step(reference, "h", "g", tasks, now, first, False, by_key=True)
        assert got == expected, f"snapshot {index}"
        assert ours.encode() == reference.encode(), f"snapshot {index}"
