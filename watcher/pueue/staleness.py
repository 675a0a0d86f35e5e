"""When pueue's state file may hide a change that pueued will not save by itself.

pueued does not save ``state.json`` after every change (3.4.1 and 4.0.4; tests/fixtures/pueue/README.md):
not after marking dependants ``DependencyFailed``, nor after ``stash``, ``enqueue``, ``parallel``,
``restart --in-place`` or (4.x) the end of a group reset. Usually a change that is saved follows soon (a task
starts or ends), but not always: when a group's last tasks wait on a dependency that failed, nothing is left
to start, and the file keeps them Queued for good, so the phase never completes in the file.

A snapshot read from the file is *suspect* when it shows something pueued never keeps for long (its task
loop runs every few hundred milliseconds):

- a Queued task of a group that is not Paused, with a dependency that ended unsuccessfully: pueued marks it
  DependencyFailed at once (``task_handler.rs::check_failed_dependencies``) and does not save;
- a Queued task of a Running group with a free slot (``parallel_tasks`` 0 is unlimited) whose dependencies
  all succeeded: pueued starts it at once (``spawn.rs::get_next_task_id``), unless it was stashed meanwhile;
- a group in ``Reset`` (4.x): the end of a reset is not saved.

The poller confirms a suspect snapshot with ``pueue status`` once the file has stayed the same for a poll, so
that a steady queue, where groups run normally or wait on work in progress, costs no ``pueue status`` at all.
"""

from __future__ import annotations

from collections.abc import Container
from itertools import compress
from operator import attrgetter

from watcher.pueue.model import Result, Snapshot, Status, Task


def suspect(snapshot: Snapshot, watched: Container[str]) -> str | None:
    """Why the snapshot may be stale, for one of the ``watched`` groups; None when it cannot be.

    Called on every poll that finds the state changed: only the Queued tasks matter, found in one pass in C
    (no Python code per task), and a group's running tasks are counted only for a group that has some."""
    for name, each in snapshot.groups.items():
        if each.status not in ("Running", "Paused") and name in watched:
            return f"group {name} is in {each.status}"
    tasks = snapshot.tasks
    queued = [t for t in compress(tasks, map(_QUEUED, map(_STATUS, tasks))) if t.group in watched]
    if not queued:
        return None
    by_id = dict(zip(map(_ID, tasks), tasks, strict=True)) if any(t.dependencies for t in queued) else {}
    free: dict[str, bool] = {}  # per group: a Running group with a slot free
    for task in queued:
        group = snapshot.groups.get(task.group)
        if group is None or group.status == "Paused":
            continue
        dependencies = [by_id[d] for d in task.dependencies if d in by_id]
        if any(_failed(d) for d in dependencies):
            return f"task {task.id} of {task.group} waits on a failed dependency"
        slot = free.get(task.group)
        if slot is None:
            busy = sum(map(_BUSY.__contains__, map(_STATUS, snapshot.group_tasks(task.group))))
            slot = free[task.group] = group.parallel == 0 or busy < group.parallel
        if slot and group.status == "Running" and all(d.result is Result.SUCCESS for d in dependencies):
            return f"task {task.id} of {task.group} could start"
    return None


_ID = attrgetter("id")
_STATUS = attrgetter("status")
_QUEUED = Status.QUEUED.__eq__
_BUSY = frozenset({Status.RUNNING, Status.PAUSED})


def _failed(task: Task) -> bool:
    return task.status is Status.DONE and task.result is not Result.SUCCESS
