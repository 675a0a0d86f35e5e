"""When a state file may lag the daemon (watcher/pueue/staleness.py), and how the poller confirms it.

The same scenarios run against real pueued 4.0.4 and 3.4.1 in tests/real_pueue/test_watch_real.py."""

from __future__ import annotations

import gzip
import itertools
import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import examples
from tests.harness.fake_transport import FakeTransport
from watcher.config import HostConfig
from watcher.poll.poller import HostPoller
from watcher.pueue.model import Group, Result, Snapshot, Status, Task
from watcher.pueue.staleness import suspect
from watcher.remote.poll import MARKER
from watcher.transport.base import CommandResult, HeadCheck

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def task(
    i: int, group: str, status: Status, result: Result | None = None, after: tuple[int, ...] = ()
) -> Task:
    return Task.of(i, T0, group, None, status, result, dependencies=after)


def snap(tasks: list[Task], **groups: tuple[str, int]) -> Snapshot:
    return Snapshot(groups={n: Group(n, s, p) for n, (s, p) in groups.items()}, tasks=tuple(tasks))


Q, R, D = Status.QUEUED, Status.RUNNING, Status.DONE
CASES: list[tuple[str, Snapshot, bool]] = [
    (
        "busy group, queued waits for a slot",
        snap([task(0, "g", R), task(1, "g", Q)], g=("Running", 1)),
        False,
    ),
    ("free slot, queued could start", snap([task(1, "g", Q)], g=("Running", 1)), True),
    ("unlimited parallel", snap([task(0, "g", R), task(1, "g", Q)], g=("Running", 0)), True),
    ("paused group keeps its queue", snap([task(1, "g", Q)], g=("Paused", 1)), False),
    (
        "waits on a running task",
        snap([task(0, "a", R), task(1, "g", Q, after=(0,))], a=("Running", 1), g=("Running", 1)),
        False,
    ),
    (
        "its dependency failed",
        snap([task(0, "g", D, Result.KILLED), task(1, "g", Q, after=(0,))], g=("Running", 1)),
        True,
    ),
    (
        "its dependency failed, group busy",
        snap(
            [task(0, "a", D, Result.FAILED), task(2, "g", R), task(1, "g", Q, after=(0,))],
            a=("Running", 1),
            g=("Running", 1),
        ),
        True,
    ),
    (
        "failed dependency in a paused group: pueue waits",
        snap([task(0, "g", D, Result.FAILED), task(1, "g", Q, after=(0,))], g=("Paused", 1)),
        False,
    ),
    ("a group in reset", snap([], g=("Reset", 1)), True),
    ("all done", snap([task(0, "g", D, Result.SUCCESS)], g=("Running", 1)), False),
]


@pytest.mark.parametrize(("name", "snapshot", "expected"), CASES, ids=[c[0] for c in CASES])
def test_what_pueued_never_keeps_for_long_is_suspect(name: str, snapshot: Snapshot, expected: bool) -> None:
    """Each case is a state pueued's task loop resolves at once (suspect), or one it keeps."""
    assert (suspect(snapshot, set(snapshot.groups)) is not None) is expected


def test_only_watched_groups_count() -> None:
    """A suspect group the host does not watch costs no `pueue status`."""
    snapshot = snap([task(1, "other", Q)], other=("Running", 1), mine=("Running", 1))
    assert suspect(snapshot, {"mine"}) is None


def _document(dependency_failed: bool) -> bytes:
    b: Any = (
        {
            "Done": {
                "enqueued_at": "2026-01-01T00:00:00Z",
                "start": "2026-01-01T00:00:01Z",
                "end": "2026-01-01T00:00:01Z",
                "result": "DependencyFailed",
            }
        }
        if dependency_failed
        else {"Queued": {"enqueued_at": "2026-01-01T00:00:00Z"}}
    )
    tasks = {
        "0": {
            "id": 0,
            "created_at": "2026-01-01T00:00:00Z",
            "group": "p2",
            "dependencies": [],
            "label": None,
            "status": {
                "Done": {
                    "enqueued_at": "2026-01-01T00:00:00Z",
                    "start": "2026-01-01T00:00:00Z",
                    "end": "2026-01-01T00:00:01Z",
                    "result": "Killed",
                }
            },
        },
        "1": {
            "id": 1,
            "created_at": "2026-01-01T00:00:00Z",
            "group": "p2",
            "dependencies": [0],
            "label": None,
            "status": b,
        },
    }
    return json.dumps({"tasks": tasks, "groups": {"p2": {"status": "Running", "parallel_tasks": 1}}}).encode()


def _answer(kind: str, payload: bytes = b"", fingerprint: str = "100 1.5 7") -> CommandResult:
    header = MARKER + f"file state.json {fingerprint}\ndaemon up\n{kind}\n".encode()
    if kind == "status gzip":
        return CommandResult(0, header + gzip.compress(payload), b"pueue-watcher-rc 0\n")
    return CommandResult(0, header + (gzip.compress(payload) if payload else b""), b"")


async def test_a_suspect_file_is_confirmed_once_after_a_poll_without_change() -> None:
    """State (suspect) → unchanged → confirmed by `pueue status`, then trusted while the file stays put."""
    fake = FakeTransport(
        [
            _answer("state gzip", _document(False)),
            _answer("unchanged"),
            _answer("status gzip", _document(True)),
            _answer("unchanged"),
            _answer("unchanged"),
        ]
    )
    poller = HostPoller(HostConfig(name="h"), fake, timeout=5)
    poller._snapshot = Snapshot(groups={}, tasks=())  # an earlier poll: not fresh
    poller._fingerprint = "99 1.0 7"
    first = await poller.poll()
    assert first.source == "state"
    assert first.snapshot is not None and first.snapshot.group_tasks("p2")[1].state == "queued"
    second = await poller.poll()
    assert second.source == "confirm"
    assert second.snapshot is not None and second.snapshot.group_tasks("p2")[1].state == "dependency_failed"
    assert fake.calls[2][8] == "0"  # the confirmation does not read the file
    assert [(await poller.poll()).source for _ in range(2)] == ["unchanged", "unchanged"]
    assert poller.confirmations == 1


async def test_a_fresh_poller_confirms_a_suspect_file_at_once() -> None:
    """No earlier poll says how long the file has looked so (a restart, `once`): ask pueue in this poll."""
    fake = FakeTransport([_answer("state gzip", _document(False)), _answer("status gzip", _document(True))])
    poller = HostPoller(HostConfig(name="h"), fake, timeout=5)
    result = await poller.poll()
    assert result.source == "confirm"
    assert result.snapshot is not None and result.snapshot.group_tasks("p2")[1].state == "dependency_failed"
    assert poller.fingerprint == "100 1.5 7"


class AnswersByRequest(FakeTransport):
    """Answers a confirmation (read_state = 0) with `pueue status`, anything else with "unchanged"."""

    async def run(
        self, argv: Sequence[str], *, timeout: float, limit: int | None = None, head: HeadCheck | None = None
    ) -> CommandResult:
        self.calls.append(list(argv))
        if argv[8] == "0":
            return _answer("status gzip", _document(False))
        return _answer("unchanged") if len(self.calls) > 1 else _answer("state gzip", _document(False))


async def test_a_state_that_stays_suspect_is_confirmed_ever_less_often() -> None:
    """If pueue itself keeps showing a suspect state, confirmations back off: 1, 2, 4, … polls apart, up to
    32: a bounded cost, whatever the daemon does."""
    poller = HostPoller(HostConfig(name="h"), AnswersByRequest([]), timeout=5)
    sources = [(await poller.poll()).source for _ in range(80)]
    confirms = [i for i, s in enumerate(sources) if s == "confirm"]
    gaps = [b - a for a, b in itertools.pairwise(confirms)]
    assert gaps[:5] == [2, 4, 8, 16, 32], sources
    assert poller.confirmations == len(confirms) < 10


def _reference(snapshot: Snapshot, watched: set[str]) -> str | None:
    """suspect() as it was first written: every task walked in Python, twice."""
    for name, each in snapshot.groups.items():
        if each.status not in ("Running", "Paused") and name in watched:
            return f"group {name} is in {each.status}"
    queued = [t for t in snapshot.tasks if t.status is Status.QUEUED and t.group in watched]
    if not queued:
        return None
    by_id = {t.id: t for t in snapshot.tasks} if any(t.dependencies for t in queued) else {}
    busy = Counter(t.group for t in snapshot.tasks if t.status in (Status.RUNNING, Status.PAUSED))
    for each_task in queued:
        group = snapshot.groups.get(each_task.group)
        if group is None or group.status == "Paused":
            continue
        dependencies = [by_id[d] for d in each_task.dependencies if d in by_id]
        if any(d.status is Status.DONE and d.result is not Result.SUCCESS for d in dependencies):
            return f"task {each_task.id} of {each_task.group} waits on a failed dependency"
        free = group.parallel == 0 or busy[each_task.group] < group.parallel
        if free and group.status == "Running" and all(d.result is Result.SUCCESS for d in dependencies):
            return f"task {each_task.id} of {each_task.group} could start"
    return None


_OUTCOMES = st.sampled_from(
    [(s, None) for s in Status if s is not Status.DONE] + [(Status.DONE, r) for r in Result]
)


@settings(max_examples=examples(300), deadline=None)
@given(
    specs=st.lists(
        st.tuples(
            st.integers(0, 8),
            st.sampled_from("abc"),
            _OUTCOMES,
            st.lists(st.integers(0, 9), max_size=2).map(tuple),
        ),
        max_size=10,
    ),
    groups=st.dictionaries(
        st.sampled_from("abcd"), st.tuples(st.sampled_from(["Running", "Paused", "Reset"]), st.integers(0, 2))
    ),
    watched=st.sets(st.sampled_from("abcd")),
)
def test_suspect_gives_the_answer_of_the_walk_over_every_task(
    specs: list[tuple[int, str, tuple[Status, Result | None], tuple[int, ...]]],
    groups: dict[str, tuple[str, int]],
    watched: set[str],
) -> None:
    """On any snapshot (ids repeated, dependencies missing or in other groups), suspect() names the same task
    for the same reason as the plain walk over every task."""
    tasks = [task(i, g, status, result, after) for i, g, (status, result), after in specs]
    snapshot = snap(tasks, **groups)
    assert suspect(snapshot, watched) == _reference(snapshot, watched)
