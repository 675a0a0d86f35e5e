"""What pueue tells us, reduced to what the watcher needs.

``envs``, ``command``, ``original_command`` and ``path`` are deliberately absent: ``envs`` holds the whole
environment of the shell that ran ``pueue add`` (tokens, passwords), and commands often carry credentials too.
They are never decoded, so they can never be kept or logged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from operator import attrgetter

import msgspec

#: What the parser accepts: a whole document or a view of one (a memoryview of an mmap'ed state file).
BytesLike = bytes | bytearray | memoryview


class Status(StrEnum):
    """The status name of a pueue task (the key of pueue's externally tagged enum)."""

    QUEUED = "Queued"
    STASHED = "Stashed"
    RUNNING = "Running"
    PAUSED = "Paused"
    LOCKED = "Locked"
    DONE = "Done"


class Result(StrEnum):
    """The result of a Done task."""

    SUCCESS = "Success"
    FAILED = "Failed"
    FAILED_TO_SPAWN = "FailedToSpawn"
    KILLED = "Killed"
    ERRORED = "Errored"
    DEPENDENCY_FAILED = "DependencyFailed"


#: The keys of the ``tasks`` object in ``pueue-watcher status --json``, in display order. Every key is
#: always present. The first five are unfinished states; the rest are the results of Done tasks.
COUNT_KEYS: tuple[str, ...] = (
    "queued",
    "stashed",
    "running",
    "paused",
    "locked",
    "success",
    "failed",
    "failed_to_spawn",
    "killed",
    "errored",
    "dependency_failed",
)
UNFINISHED_KEYS: frozenset[str] = frozenset(COUNT_KEYS[:5])

_STATUS_KEY = {
    Status.QUEUED: "queued",
    Status.STASHED: "stashed",
    Status.RUNNING: "running",
    Status.PAUSED: "paused",
    Status.LOCKED: "locked",
}
_RESULT_KEY = {
    Result.SUCCESS: "success",
    Result.FAILED: "failed",
    Result.FAILED_TO_SPAWN: "failed_to_spawn",
    Result.KILLED: "killed",
    Result.ERRORED: "errored",
    Result.DEPENDENCY_FAILED: "dependency_failed",
}


class Task(msgspec.Struct, frozen=True, gc=False):
    """One pueue task. Identify it by :attr:`key`: pueue reuses ids after ``clean``/``remove``.

    A msgspec Struct rather than a dataclass: a state file holds tens of thousands of tasks, and a Struct is
    built about five times faster than a frozen dataclass (bench/status_large.py).
    """

    id: int
    created_at: datetime
    group: str
    label: str | None
    status: Status
    result: Result | None = None
    exit_code: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    #: The count key (one of :data:`COUNT_KEYS`): the result when Done, else the status. Stored, not
    #: derived on access: counting 53,000 tasks through a property costs more than the whole conversion.
    state: str = ""
    #: The ids this task waits for (``pueue add --after``); kept for unfinished tasks only (the bulk of a
    #: large state is Done, and nothing reads a finished task's dependencies).
    dependencies: tuple[int, ...] = ()

    @classmethod
    def of(
        cls,
        id: int,
        created_at: datetime,
        group: str,
        label: str | None,
        status: Status,
        result: Result | None = None,
        exit_code: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        dependencies: tuple[int, ...] = (),
    ) -> Task:
        """Build a task, deriving :attr:`state`."""
        state = state_key(status, result)
        return cls(id, created_at, group, label, status, result, exit_code, start, end, state, dependencies)

    @property
    def key(self) -> tuple[int, datetime]:
        return (self.id, self.created_at)

    @property
    def finished(self) -> bool:
        return self.status is Status.DONE


@dataclass(frozen=True, slots=True)
class Group:
    """A pueue group: ``status`` is ``Running``, ``Paused`` or (v4, briefly) ``Reset``."""

    name: str
    status: str
    parallel: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One host's queue at one moment: every group, and the tasks of the watched groups."""

    groups: Mapping[str, Group]
    # Not in repr(): tens of thousands of tasks make a repr that takes a second to build, and asyncio
    # builds reprs of task results in places one does not expect (signal handler lookups, debug logs).
    tasks: tuple[Task, ...] = field(repr=False)
    format: str = "unknown"  # "v3", "v4" or "unknown" (no tasks to tell from)
    tasks_by_group: Mapping[str, tuple[Task, ...]] = field(init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"Snapshot(groups={sorted(self.groups)!r}, tasks=<{len(self.tasks)}>, format={self.format!r})"

    def __post_init__(self) -> None:
        by_group: dict[str, list[Task]] = {}
        for task in self.tasks:
            by_group.setdefault(task.group, []).append(task)
        object.__setattr__(self, "tasks_by_group", {g: tuple(ts) for g, ts in by_group.items()})

    def group_tasks(self, group: str) -> tuple[Task, ...]:
        return self.tasks_by_group.get(group, ())


_STATE = attrgetter("state")


def state_key(status: Status, result: Result | None) -> str:
    return _RESULT_KEY[result] if result is not None else _STATUS_KEY[status]


def count_states(tasks: Iterable[Task]) -> dict[str, int]:
    """Count tasks per :data:`COUNT_KEYS` key; every key is present."""
    counts = Counter(map(_STATE, tasks))
    return {key: counts.get(key, 0) for key in COUNT_KEYS}
