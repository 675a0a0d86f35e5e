"""Keep pueue's state file lean: ``pueue clean`` when the file grows too large.

pueue rewrites its whole state file after every change, and every ``pueue add`` waits for that: at 53,000
finished tasks the file is about 70 MB and an ``add`` takes a third of a second instead of a few
milliseconds. So when a host's state file exceeds ``hygiene.max_state_bytes``, the watcher cleans it.

**What it costs pueue.** pueued's ``clean`` (``message_handler/clean.rs``, 3.4.1 and 4.0.4) holds the
daemon's lock throughout, and for *every* Done task calls ``is_task_removable``, a scan of all tasks, before
it looks at the task's group. So ``pueue clean -s --group=G`` costs O(done × total) whatever G's size (28–34 s
at 53,000 tasks), and cleaning 40 groups one by one pays that 40 times, while every ``pueue add`` waits. One
``pueue clean -s`` of the whole host pays it once, over a map that shrinks as it goes (README, "State
hygiene", has the measured table): about 9 ns per pair of tasks, 12.7 s at 53,000 on a quiet machine, 42–126
s on a loaded one, all under one lock. Hence the plan:

- **scope "bulk"**, when the host holds more than :data:`BULK_ABOVE_TASKS` tasks (a whole-host clean would
  hold the lock for seconds to minutes): the Done/Success tasks of the groups that are complete, recorded,
  watched, not blocked, whose name travels and whose status is "Running" (not "Paused", see below) go with
  ``pueue remove ID…``, in chunks, one round trip each (remote/remove.py). pueued's remove calls
  ``is_task_removable`` (a scan of all N tasks) for each of its k ids, then saves the state once, all under
  its lock; each chunk is sized so that k × N ≤ :data:`CHUNK_PAIRS` (well under a second), and pueued
  serves other requests (a ``pueue add``) between chunks. ``pueue remove`` checks neither the status nor the
  identity of a task, so the chunk's script first finds each candidate in the state file as the same task
  (its id with its own ``created_at``): an id reused after someone else's clean is never removed. Why only
  groups that are not Paused: ``pueue restart --in-place`` turns a Done task back into Queued without
  saving the state file, so the file still shows it Done. In a complete, running group pueued starts it at
  once, and a Running task is never removed; in a Paused group it would stay Queued, and ``remove`` would
  take it. Such groups (and everything else) are left to the next cycle's regular plan, whose whole-host
  ``clean -s`` is cheap by then; the bulk removes no failed task (``clean = "all"`` is for that plan too).
  It needs no guard on finished tasks: it names the tasks it removes. The candidate ids (53,000 of them)
  are not part of the persisted record: :func:`candidates` derives them from the plan's snapshot. A bulk
  that went through is followed, at the next cycle, by the regular plan of the rest (``follow_up``: whatever
  the file's size and the cooldown, never a bulk again), cheap by then: the successful tasks of Paused and
  running groups would otherwise stay as long as the file is below ``max_state_bytes``.
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

The guard of "host" and "groups" (remote/clean.py): nothing is cleaned when a task finished since the
plan's poll (the state file's count of Done tasks differs from the plan's, :attr:`PollResult.file_done`);
tasks added meanwhile do not defer the clean.

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
from datetime import datetime, timedelta

import msgspec
import structlog

from watcher.config import HostConfig, HygieneSection
from watcher.errors import HostTimeout, PueueUnavailable
from watcher.phases.tracker import GroupTrack, from_micros, key_of
from watcher.poll.poller import PollResult
from watcher.pueue.model import UNFINISHED_KEYS, Result, Snapshot, Status, Task, count_states
from watcher.records import CleanRecord
from watcher.remote.clean import CLEAN_DEFERRED, REPLY_BYTES, clean_argv
from watcher.remote.pueue import command_error, pueue_error
from watcher.remote.remove import BULK_MATCHED, BULK_UNAVAILABLE, remove_argv
from watcher.remote.shell import ARGUMENTS_BUDGET, fitting_arguments
from watcher.transport import Transport

log = structlog.get_logger("watcher.hygiene")

_NAME_BUDGET = 64 * 1024  # one group name, quoted (fitting_arguments holds the budget of them all)

# The cost of pueued's dependency scan (is_task_removable: every task, for each task it is asked about),
# measured with 4.0.4: a whole-host `clean -s` of 53,000 Done tasks looks at about 53,000²/2 = 1.4e9 pairs in
# 12.7 s on a quiet machine, ≈ 9 ns a pair; 3 to 10 times that on a loaded one (README, "State hygiene").
NS_PER_PAIR = 9.0
# Above this many tasks on the host, the bulk removal replaces the whole-host clean: 15,000²/2 pairs ≈ 1.0 s
# of lock on a quiet machine (the table: 0.86 s at 10,000, 3.9 s at 20,000 on a loaded one), and the lock
# grows with the square beyond (42 s at 53,000 on the loaded machine). Below it, one `clean -s` is cheaper
# than chunks, each of which also saves the whole state file.
BULK_ABOVE_TASKS = 15_000
# One chunk of the bulk removal: k ids on a host of N tasks cost pueued k * N pairs under its lock, then one
# save of the state file. 5e7 pairs ≈ 0.45 s quiet (≈ 1.5 s loaded): 943 ids at 53,000 tasks, more as the
# host shrinks.
CHUNK_PAIRS = 50_000_000
# What else travels with a chunk's arguments: the script and its first four arguments (remove_argv).
_CHUNK_ARGUMENT_BYTES = ARGUMENTS_BUDGET - 4 * 1024


@dataclass(slots=True)
class Hygiene:
    settings: HygieneSection
    _last: dict[str, float] = field(default_factory=dict)  # host → monotonic time of its last clean
    _no_bulk: set[str] = field(default_factory=set)  # hosts whose chunk script could not run (a .gz state)

    def plan(
        self,
        host: str,
        result: PollResult,
        tracks: Mapping[str, GroupTrack],
        now: datetime,
        *,
        blocked: Set[str] = frozenset(),
        whole_host: bool = True,
        follow_up: bool = False,
    ) -> CleanRecord | None:
        """What to clean on ``host`` after this poll, or None. Pure, apart from the cooldown clock.

        ``whole_host`` is False when the snapshot does not show every group of the host (the host watches
        only some groups): then a whole-host clean could remove what the watcher never saw. ``follow_up``:
        the last clean was a bulk removal that went through (:func:`completed_bulk`); the rest is planned
        whatever the size and the cooldown, and not in bulk."""
        size, snapshot = result.state_file_bytes, result.snapshot
        if self.settings.clean == "off" or snapshot is None or size is None:
            return None
        if size <= self.settings.max_state_bytes and not follow_up:
            return None
        cooling = time.monotonic() - self._last.get(host, float("-inf")) < self.settings.cooldown
        if cooling and not follow_up:
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
        bulk = [] if follow_up else self._bulk_groups(host, result, cleanable, whole_host)
        if bulk:
            per_group = []
            targets = bulk
        elif host_scope:
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
            scope="bulk" if bulk else "host" if host_scope else "groups",
            seen=self.settings.dry_run,  # a dry run removes nothing, so there is nothing for a poll to show
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

    def _bulk_groups(
        self, host: str, result: PollResult, cleanable: list[str], whole_host: bool
    ) -> list[str]:
        """The groups of a bulk removal (scope "bulk"), or none when a whole-host clean is cheap enough."""
        snapshot = result.snapshot
        assert snapshot is not None
        tasks = result.file_tasks
        if tasks is None:  # no state file was read: the snapshot shows every task only of a whole host
            tasks = len(snapshot.tasks) if whole_host else 0
        if tasks <= BULK_ABOVE_TASKS or host in self._no_bulk:
            return []
        # "Running" only: not "Paused" (a task restarted in place would be Queued there, unsaved, and
        # removable), nor 4.x's passing "Reset".
        return [
            g
            for g in cleanable
            if snapshot.groups[g].status == "Running"
            and any(t.state == "success" for t in snapshot.group_tasks(g))
        ]

    async def clean(
        self,
        host: HostConfig,
        transport: Transport,
        plan: CleanRecord,
        timeout: float,
        fingerprint: str = "",
        *,
        done: int | None = None,
        candidates: list[str] | None = None,
        tasks: int | None = None,
    ) -> bool:
        """Run the clean on the host (one round trip; a bulk removal, one per chunk), unless a task
        finished since the plan (the state file no longer holds ``done`` Done tasks; when that is unknown,
        its fingerprint is no longer ``fingerprint``): then nothing is removed and the answer is False, and
        the next cycle plans again from what changed. A bulk removal takes ``candidates`` (:func:`candidates`
        of the plan's snapshot) on a host of ``tasks`` tasks. Raises HostError on failure, HostTimeout when
        ``timeout`` runs out (pueued finishes a clean it has received; the client is what stops)."""
        previous = self._last.get(host.name)
        self._last[host.name] = time.monotonic()
        if plan.dry_run:
            log.info("state.clean_planned", host=host.name, groups=plan.groups, scope=plan.scope,
                     bytes=plan.bytes_before)  # fmt: skip
            return True
        if plan.scope == "bulk":
            if await self._bulk(host, transport, timeout, candidates or [], tasks):
                return True
        else:
            argv = clean_argv(host, per_group(plan), plan.mode, fingerprint, whole_host=plan.scope == "host",
                              done=done)  # fmt: skip
            answer = await transport.run(argv, timeout=timeout)
            if answer.exit_status != 0:
                raise PueueUnavailable(
                    f"pueue clean failed (exit {answer.exit_status}): {pueue_error(answer.stderr)}"
                )
            if CLEAN_DEFERRED not in answer.stdout[:REPLY_BYTES]:
                return True
        # Nothing was removed: the cooldown does not start, so the next cycle may clean.
        if previous is None:
            del self._last[host.name]
        else:
            self._last[host.name] = previous
        return False

    async def _bulk(
        self, host: HostConfig, transport: Transport, timeout: float, candidates: list[str], tasks: int | None
    ) -> bool:
        """The bulk removal, chunk by chunk, within ``timeout`` in all. False when the host cannot run it (a
        compressed state file, a grep without -F -f -): nothing was removed, and the host's next plans use
        ``pueue clean`` instead."""
        deadline = time.monotonic() + timeout
        left = max(tasks or 0, len(candidates))  # the host's tasks, as the chunks remove them
        start = removed = chunks = 0
        while start < len(candidates):
            chunk = next_chunk(candidates, start, left)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                spent = f"{start} of {len(candidates)} tasks"
                raise HostTimeout(f"the budget of {timeout:g}s ran out after {spent}")
            answer = await transport.run(remove_argv(host, chunk), timeout=remaining)
            if answer.exit_status != 0:
                error = command_error(answer.stdout, answer.stderr)
                raise PueueUnavailable(f"pueue remove failed (exit {answer.exit_status}): {error}")
            said = answer.stdout[:REPLY_BYTES]  # the script's own lines come first: never scan a flood
            if BULK_UNAVAILABLE in said and start == 0:
                log.info("state.bulk_unavailable", host=host.name,
                         why=said.decode(errors="replace").strip()[-200:])  # fmt: skip
                self._no_bulk.add(host.name)
                return False
            matched = BULK_MATCHED.search(said)
            gone = int(matched.group(1)) if matched else 0
            removed += gone
            left = max(left - gone, 1)
            start += len(chunk)
            chunks += 1
        log.info("state.bulk_removed", host=host.name, chunks=chunks, candidates=len(candidates),
                 matched=removed)  # fmt: skip
        return True


def completed_bulk(record: CleanRecord) -> bool:
    """A bulk removal that ran to its end (settled, not deferred, not cut short by its budget or a stop):
    the next cycle plans the rest (``Hygiene.plan(follow_up=True)``)."""
    if record.scope != "bulk" or record.dry_run or record.deferred or record.bytes_after is None:
        return False
    note = record.note or ""
    return not record.partial or not ("budget" in note or "stopped" in note)


def per_group(plan: CleanRecord) -> list[str]:
    """The groups the clean names one by one: all of them for scope "groups"; for scope "host", those whose
    failed tasks go too (``clean = "all"``), after the whole-host ``clean -s``; none for scope "bulk" (it
    names tasks, its groups' successful ones)."""
    if plan.scope == "bulk":
        return []
    if plan.scope != "host":
        return plan.groups
    return [g for g in plan.groups if set(plan.removed.get(g, {})) - {"success"}]


def candidates(plan: CleanRecord, snapshot: Snapshot) -> list[str]:
    """A bulk removal's tasks, as remote/remove.py takes them: ``ID=CREATED``, CREATED the task's
    ``created_at`` to the second in the offset pueue wrote it with (msgspec keeps it), as the state file
    spells it. Empty for any other scope.

    pueue writes nanoseconds and msgspec rounds them to the nearest microsecond, so a task created in the last
    half microsecond of a second (``…:59.9999996``) reads as the next one (``…:00.000000``): the grep would
    miss it, and the task would stay (about one in two million; seen as a partial bulk at 53,000 tasks). A
    ``created_at`` on a whole second is sent as both seconds it may have been written in."""
    if plan.scope != "bulk":
        return []
    going = _going(plan, snapshot)
    found = sorted((t for tasks in going.values() for t in tasks), key=lambda t: t.id)
    second = "%Y-%m-%dT%H:%M:%S"
    out = []
    for t in found:
        out.append(f"{t.id}={t.created_at.strftime(second)}")
        if t.created_at.microsecond == 0:
            out.append(f"{t.id}={(t.created_at - timedelta(seconds=1)).strftime(second)}")
    return out


def next_chunk(candidates: list[str], start: int, tasks: int) -> list[str]:
    """The chunk of ``candidates`` from ``start`` that one ``pueue remove`` may take on a host of ``tasks``
    tasks: k ids with k × tasks ≤ CHUNK_PAIRS (at least one), and no more arguments than travel in one
    remote command."""
    k = max(1, CHUNK_PAIRS // max(tasks, 1))
    chunk: list[str] = []
    budget = _CHUNK_ARGUMENT_BYTES
    for value in candidates[start : start + k]:
        budget -= len(value) + 1  # ID=YYYY-MM-DDTHH:MM:SS: nothing to quote
        if budget < 0 and chunk:
            break
        chunk.append(value)
    return chunk


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
    restarted: bool = False,
) -> CleanRecord:
    """The plan's record, completed from the first poll after the clean: the size after, and what the plan
    meant to remove and is still there (``kept``), with why when it is a partial clean. ``stopped``: no poll
    has shown it (the record stays unseen); ``restarted``: the clean was taken up after a restart."""
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
    if restarted:
        reasons.append("the watcher was stopped while the clean ran; a poll after its restart showed it")
    if kept and not reasons:
        reasons.append(f"pueue kept {sum(kept.values())} task(s): unfinished tasks depend on them")
    return msgspec.structs.replace(
        plan,
        bytes_after=after.state_file_bytes,
        kept=kept,
        partial=bool(kept or reasons),
        note="; ".join(reasons) or None,
        seconds=None if seconds is None else round(seconds, 3),
        seen=not stopped,
    )


def vanished_successes(
    plan: CleanRecord, tracks: Mapping[str, GroupTrack], snapshot: Snapshot, started: datetime
) -> dict[str, list[Task]]:
    """The tasks the tracker saw unfinished, in open phases, that are gone from the first snapshot after a
    whole-host ``clean -s``, as the Done/Success tasks they were; per group.

    ``clean -s`` removes Success tasks only, and the clean runs only while no task finished since the plan's
    poll (remote/clean.py), so such a task finished, successfully, in the few milliseconds between that
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
    """Can the name be a command-line argument (fitting_arguments)?"""
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


def with_vanished(record: CleanRecord, vanished: Mapping[str, int]) -> CleanRecord:
    """The record of a whole-host clean, with the successes it removed that its plan did not name."""
    if not vanished:
        return record
    removed = {g: dict(counts) for g, counts in record.removed.items()}
    for group, n in vanished.items():
        removed.setdefault(group, {})
        removed[group]["success"] = removed[group].get("success", 0) + n
    groups = sorted(set(record.groups) | set(vanished))
    return msgspec.structs.replace(record, groups=groups, removed=removed)
