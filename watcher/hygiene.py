"""Keep pueue's state file lean: ``pueue clean`` when the file grows too large.

pueue rewrites its whole state file after every change, and every ``pueue add`` waits for that: at 53,000
finished tasks the file is about 70 MB and an ``add`` takes a third of a second instead of a few
milliseconds. So when a host's state file exceeds ``hygiene.max_state_bytes``, the watcher cleans it.

**What it costs pueue.** pueued's ``clean`` (``message_handler/clean.rs``, 3.4.1 and 4.0.4) holds the
daemon's lock throughout, and for *every* Done task calls ``is_task_removable``, a scan of all tasks, before
it looks at the task's group. So ``pueue clean -s --group=G`` costs O(done × total) whatever G's size (28–34 s
at 53,000 tasks), and cleaning 40 groups one by one pays that 40 times, while every ``pueue add`` waits. One
``pueue clean -s`` of the whole host pays it once, over a map that shrinks as it goes (README, "State
hygiene", has the measured table). Hence the plan:

- **scope "host"** (the usual case): one ``pueue clean -s`` of the whole host, then, with ``clean = "all"``,
  ``pueue clean --group=G`` of each complete, recorded group that holds failed tasks (cheap by then: the
  successful bulk is gone). It also removes the successful tasks of groups still running; that loses no
  phase's record, because the tracker keeps each task of an open phase in the state it last saw it in, and a
  task it saw unfinished that vanishes across this clean must have succeeded (``clean -s`` removes Success
  tasks only): :func:`vanished_successes` tells the tracker so. Failed tasks are never removed from a group
  whose phase is not recorded.
- **scope "groups"**: ``pueue clean [-s] --group=G`` of each complete, recorded group, as before, when a
  whole-host clean would touch a group the watcher must leave alone: one it does not watch (``groups``
  globs), one whose last phase has a check that did not pass (its evidence stays), one it has no track of,
  or one whose name cannot travel as an argument (a NUL, or tens of kilobytes; such a group is never cleaned).

The clean runs beside the host's polls (watcher/watch.py), within its own budget (``hygiene.timeout``). What
it removed is known from the first poll after it: what the plan meant to remove and is still there is
``kept``, and the clean is recorded as partial (pueue keeps a task that an unfinished task depends on; the
budget ran out; the watcher stopped).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
import structlog

from watcher.config import HostConfig, HygieneSection
from watcher.errors import PueueUnavailable
from watcher.phases.tracker import GroupTrack, from_micros, key_of
from watcher.poll.poller import PollResult
from watcher.poll.remote import CLEAN_DEFERRED, clean_argv, fitting_arguments, pueue_error
from watcher.pueue.model import UNFINISHED_KEYS, Result, Snapshot, Status, Task, count_states
from watcher.store import CleanRecord
from watcher.transport import Transport

log = structlog.get_logger("watcher.hygiene")

_NAME_BUDGET = 64 * 1024  # one group name, quoted (remote.fitting_arguments holds the budget of them all)


@dataclass(slots=True)
class Hygiene:
    settings: HygieneSection
    _last: dict[str, float] = field(default_factory=dict)  # host → monotonic time of its last clean

    def plan(
        self,
        host: str,
        result: PollResult,
        tracks: Mapping[str, GroupTrack],
        now: datetime,
        *,
        blocked: Set[str] = frozenset(),
        whole_host: bool = True,
    ) -> CleanRecord | None:
        """What to clean on ``host`` after this poll, or None. Pure, apart from the cooldown clock.

        ``whole_host`` is False when the snapshot does not show every group of the host (the host watches
        only some groups): then a whole-host clean could remove what the watcher never saw."""
        size, snapshot = result.state_file_bytes, result.snapshot
        if self.settings.clean == "off" or snapshot is None or size is None:
            return None
        if size <= self.settings.max_state_bytes:
            return None
        if time.monotonic() - self._last.get(host, float("-inf")) < self.settings.cooldown:
            return None
        mode = self.settings.clean
        names = sorted(snapshot.groups)
        cleanable = [
            g for g in names if g not in blocked and _travels(g) and _complete(snapshot, g, tracks.get(g))
        ]
        holding = [g for g in names if any(t.state == "success" for t in snapshot.group_tasks(g))]
        host_scope = whole_host and all(
            g in cleanable or (g not in blocked and _travels(g) and _open(snapshot, g, tracks.get(g)))
            for g in holding
        )
        if host_scope:
            failing = [g for g in cleanable if mode == "all" and _done_failures(snapshot.group_tasks(g))]
            per_group = fitting_arguments(failing)
            targets = sorted(set(holding) | set(per_group))
        else:
            per_group = fitting_arguments(cleanable)
            targets = per_group
        record = CleanRecord(
            host=host,
            at=now,
            groups=targets,
            mode=mode,
            dry_run=self.settings.dry_run,
            bytes_before=size,
            bytes_after=None,
            removed={},
            failed_labels={},
            scope="host" if host_scope else "groups",
        )
        removed, failed = {}, {}
        for group, gone in _going(record, snapshot, per_group).items():
            removed[group] = {k: n for k, n in count_states(gone).items() if n}
            failed[group] = [t.label or f"#{t.id}" for t in gone if t.state != "success"][:20]
        groups = [g for g in record.groups if removed[g]]  # a group with nothing to remove is not named
        if not groups:
            return None
        return msgspec.structs.replace(
            record,
            groups=groups,
            removed={g: removed[g] for g in groups},
            failed_labels={g: failed[g] for g in groups if failed[g]},
        )

    async def clean(
        self, host: HostConfig, transport: Transport, plan: CleanRecord, timeout: float, fingerprint: str = ""
    ) -> bool:
        """Run the clean on the host (one round trip), unless the state file is no longer the one the plan
        was made from (``fingerprint``, when known): then nothing is removed and the answer is False, and
        the next cycle plans again from what changed. Raises HostError on failure, HostTimeout when
        ``timeout`` runs out (pueued finishes a clean it has received; the client is what stops)."""
        previous = self._last.get(host.name)
        self._last[host.name] = time.monotonic()
        if plan.dry_run:
            log.info("state.clean_planned", host=host.name, groups=plan.groups, scope=plan.scope,
                     bytes=plan.bytes_before)  # fmt: skip
            return True
        argv = clean_argv(host, per_group(plan), plan.mode, fingerprint, whole_host=plan.scope == "host")
        answer = await transport.run(argv, timeout=timeout)
        if answer.exit_status != 0:
            raise PueueUnavailable(
                f"pueue clean failed (exit {answer.exit_status}): {pueue_error(answer.stderr)}"
            )
        if CLEAN_DEFERRED in answer.stdout:
            # Nothing was removed: the cooldown does not start, so the next cycle may clean.
            if previous is None:
                del self._last[host.name]
            else:
                self._last[host.name] = previous
            return False
        return True


def per_group(plan: CleanRecord) -> list[str]:
    """The groups the clean names one by one: all of them for scope "groups"; for scope "host", those whose
    failed tasks go too (``clean = "all"``), after the whole-host ``clean -s``."""
    if plan.scope != "host":
        return plan.groups
    return [g for g in plan.groups if set(plan.removed.get(g, {})) - {"success"}]


def targets(plan: CleanRecord, snapshot: Snapshot) -> frozenset[str]:
    """The tasks (``tracker.key_of``) the clean means to remove, as the plan's snapshot shows them."""
    return frozenset(key_of(t) for tasks in _going(plan, snapshot).values() for t in tasks)


def settled(
    plan: CleanRecord,
    planned: Set[str],
    after: PollResult,
    *,
    seconds: float | None,
    expired: str | None = None,
    stopped: bool = False,
) -> CleanRecord:
    """The plan's record, completed from the first poll after the clean: the size after, and what the plan
    meant to remove and is still there (``kept``), with why when it is a partial clean."""
    kept: dict[str, int] = {}
    snapshot = after.snapshot
    if snapshot is not None:
        for task in snapshot.tasks:
            if key_of(task) in planned:
                kept[task.group] = kept.get(task.group, 0) + 1
    reasons = []
    if expired is not None:
        reasons.append(f"the budget ran out ({expired}); pueued finishes a clean it has received")
    if stopped:
        reasons.append("the watcher stopped before a poll showed what the clean removed")
    if kept and not reasons:
        reasons.append(f"pueue kept {sum(kept.values())} task(s): unfinished tasks depend on them")
    return msgspec.structs.replace(
        plan,
        bytes_after=after.state_file_bytes,
        kept=kept,
        partial=bool(kept or reasons),
        note="; ".join(reasons) or None,
        seconds=None if seconds is None else round(seconds, 3),
    )


def vanished_successes(
    plan: CleanRecord, tracks: Mapping[str, GroupTrack], snapshot: Snapshot, started: datetime
) -> dict[str, list[Task]]:
    """The tasks the tracker saw unfinished, in open phases, that are gone from the first snapshot after a
    whole-host ``clean -s``, as the Done/Success tasks they were; per group.

    ``clean -s`` removes Success tasks only, and the clean runs only while the state file is the one the plan
    saw (remote.CLEAN_SCRIPT), so such a task finished, successfully, in the few milliseconds between that
    check and pueued taking its lock, and was removed. Stepped through once with the snapshot, they let the
    tracker count it as the success it was, and complete a phase whose last task it was (else the phase
    would count it "removed", or be abandoned if the group is left empty). Its end is not known: ``started``
    (when the clean was sent) stands for it. One thing could also make such a task vanish in that window: a
    ``pueue remove`` of a queued task by someone else, which would then be counted as a success."""
    if plan.scope != "host" or plan.dry_run:
        return {}
    present = {key_of(t) for t in snapshot.tasks}
    found: dict[str, list[Task]] = {}
    for group, track in tracks.items():
        if track.phase is None:
            continue
        for key, member in track.phase.members.items():
            if member.present and member.state in UNFINISHED_KEYS and key not in present:
                start = None if member.start is None else from_micros(member.start)
                task = Task.of(member.id, from_micros(member.created), group, member.label, Status.DONE,
                               Result.SUCCESS, 0, start, started)  # fmt: skip
                found.setdefault(group, []).append(task)
    return found


def _going(
    plan: CleanRecord, snapshot: Snapshot, named_groups: list[str] | None = None
) -> dict[str, list[Task]]:
    """Per group, the tasks of ``snapshot`` the plan asks pueue to remove. ``named_groups``: the groups it
    names (:func:`per_group` needs the plan's ``removed``; the plan passes them while it computes that)."""
    named = set(per_group(plan) if named_groups is None else named_groups)
    going: dict[str, list[Task]] = {}
    for group in plan.groups:
        everything = plan.mode == "all" and group in named
        tasks = [
            t
            for t in snapshot.group_tasks(group)
            if t.state == "success" or (everything and t.state not in UNFINISHED_KEYS)
        ]
        going[group] = tasks
    return going


def _done_failures(tasks: Iterable[Task]) -> bool:
    return any(t.state != "success" and t.state not in UNFINISHED_KEYS for t in tasks)


def _travels(name: str) -> bool:
    """Can the name be a command-line argument (remote.fitting_arguments)?"""
    return "\0" not in name and len(shlex.quote(name).encode(errors="surrogatepass")) < _NAME_BUDGET


def _complete(snapshot: Snapshot, group: str, track: GroupTrack | None) -> bool:
    """Complete (tasks, none unfinished), and no phase left open: its completion is on record."""
    tasks = snapshot.group_tasks(group)
    if not tasks or any(t.state in UNFINISHED_KEYS for t in tasks):
        return False
    return track is not None and track.phase is None


def _open(snapshot: Snapshot, group: str, track: GroupTrack | None) -> bool:
    """Running (unfinished tasks), and its open phase holds every task of it the watcher saw: whatever
    finished in it survives a clean in the tracker."""
    tasks = snapshot.group_tasks(group)
    return track is not None and track.phase is not None and any(t.state in UNFINISHED_KEYS for t in tasks)
