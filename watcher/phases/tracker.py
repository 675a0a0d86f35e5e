"""The phase tracker: one group's successive snapshots in, phase openings and completions out.

Definitions (the contract users rely on):

- A group is **complete** when it holds at least one task and none of its tasks is queued, stashed, running,
  paused or locked. An empty group is never complete.
- A **phase** is the set of tasks, identified by ``(id, created_at)``, that the group held from the moment it
  became active until it became complete. Each task belongs to one phase: tasks of a completed phase that
  are still in the group (nobody ran ``pueue clean``) do not join the next one.
- A completion is reported **exactly once per phase**, whatever happens to the tasks afterwards: ``pueue
  clean`` and ``remove`` only make tasks vanish, and a vanished task keeps the state it was last seen in.

How a task is told apart as new: pueue reuses ids after ``clean``, so the key is ``(id, created_at)``, and
every task created after the last completed phase's newest task (the *watermark*) is new. A task restarted in
place (``pueue restart -i``) keeps its key but becomes unfinished again; it joins a new phase too.

Between two polls a phase may complete and the next one begin. When every task of the open phase has
finished and the new tasks were all created after the last of them ended, the group was complete in between:
the old phase completes and a new one opens. A phase that began and ended entirely between two polls (or
while the watcher was down) is seen complete at once and reported once.

The tracker is a pure state machine: :func:`step` depends only on the track, the group's tasks and the
arguments, and it changes nothing but the track it is given (which the caller owns, and persists together
with the records :func:`step` returns, in one transaction).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import filterfalse
from operator import attrgetter

import msgspec

from watcher.pueue.model import UNFINISHED_KEYS, Task
from watcher.records import PhaseRecord, PhaseStatus

MAX_FAILED_LABELS = 20
_ID = attrgetter("id")
_STATE = attrgetter("state")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


#: A task label is the host's text: kept to this many characters in a phase record (its store row, events).
MAX_LABEL = 200


def _label(label: str | None, task_id: int) -> str:
    if not label:
        return f"#{task_id}"
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def micros(moment: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact, unlike float timestamps)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    """The inverse of :func:`micros`. An instant that datetime cannot hold in UTC (a hostile
    ``0001-01-01T00:00:00+14:00`` is still valid RFC 3339) is clamped to datetime's range."""
    value = min(max(value, _MIN_MICROS), _MAX_MICROS)
    return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)


_MIN_MICROS = micros(datetime.min.replace(tzinfo=UTC))
_MAX_MICROS = micros(datetime.max.replace(tzinfo=UTC))


class Member(msgspec.Struct, array_like=True, gc=False):
    """What the tracker remembers of one task of the open phase: its last seen state."""

    id: int
    created: int  # µs since the epoch
    state: str  # the count key (model.COUNT_KEYS)
    label: str | None = None
    start: int | None = None
    end: int | None = None
    present: bool = True  # False once the task has vanished from the group (clean/remove)


class OpenPhase(msgspec.Struct, array_like=True):
    id: str
    opened_at: int  # µs, the watcher's clock
    members: dict[str, Member]


class GroupTrack(msgspec.Struct):
    """Everything the tracker knows about one group between two snapshots (persisted as a blob)."""

    phase: OpenPhase | None = None
    watermark: int | None = None  # µs: the newest created_at of the tasks of completed phases
    last_first_key: str | None = None  # the first task of the last phase opened (phase ids stay unique)
    restarts: int = 0  # how many phases in a row opened with that same first task (restarted in place)

    def encode(self) -> bytes:
        return _encoder.encode(self)

    @staticmethod
    def decode(blob: bytes) -> GroupTrack:
        return _decoder.decode(blob)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(GroupTrack)


@dataclass(slots=True)
class StepResult:
    """What one snapshot changed: phases opened, completed or abandoned (as records to persist), and whether
    the track changed at all (an unchanged track need not be written)."""

    opened: list[PhaseRecord] = field(default_factory=list)
    completed: list[PhaseRecord] = field(default_factory=list)
    abandoned: list[PhaseRecord] = field(default_factory=list)
    changed: bool = False

    @property
    def records(self) -> list[PhaseRecord]:
        return [*self.opened, *self.completed, *self.abandoned]


def key_of(task: Task) -> str:
    return f"{task.id}@{micros(task.created_at)}"


def step(
    track: GroupTrack,
    host: str,
    group: str,
    tasks: Sequence[Task],
    now: datetime,
    *,
    first_sight: bool = False,
    alert_on_first_sight: bool = False,
) -> StepResult:
    """Advance ``track`` by one snapshot of ``group``'s ``tasks``.

    ``first_sight`` is true on the very first run of the watcher (an empty store): a group that is already
    complete is then recorded as a completed phase without firing, unless ``alert_on_first_sight``.
    """
    return _step(track, host, group, tasks, now, first_sight, alert_on_first_sight, by_key=False)


def _step(
    track: GroupTrack,
    host: str,
    group: str,
    tasks: Sequence[Task],
    now: datetime,
    first_sight: bool,
    alert_on_first_sight: bool,
    *,
    by_key: bool,
) -> StepResult:
    """:func:`step`. pueue's task ids are unique within a state: a member is then found by its id, and no
    task's key (a string per task) is built. Ids that repeat (a hostile state, or a vanished task whose id
    pueue reused), or ``by_key`` (the tests' reference), go by key, the later of two tasks with the same key
    winning."""
    result = StepResult()
    by_id = {} if by_key else dict(zip(map(_ID, tasks), tasks, strict=True))
    present = None if len(by_id) == len(tasks) and not by_key else {key_of(task): task for task in tasks}
    complete = bool(tasks) and UNFINISHED_KEYS.isdisjoint(map(_STATE, tasks))
    phase = track.phase

    if phase is not None:
        if present is None:
            changed, members = _refresh_by_id(phase, by_id)
            others = (
                ()
                if len(members) == len(tasks)
                else map(by_id.__getitem__, filterfalse(members.__contains__, by_id))
            )
            newcomers = _new(track, others)
        else:
            changed = _refresh(phase, present)
            newcomers = [t for k, t in present.items() if k not in phase.members and _is_new(track, t)]
        result.changed |= changed
        if newcomers and _finished_before(phase, newcomers):
            # The group was complete between two polls: that phase ends here, the newcomers start the next.
            result.completed.append(_close(track, host, group, now, fired=True))
            phase = None
        else:
            for task in newcomers:
                phase.members[key_of(task)] = _member(task)
            result.changed |= bool(newcomers)

    if phase is None:
        if present is None:
            newcomers = _new(track, tasks)
        else:
            newcomers = [t for t in present.values() if _is_new(track, t)]
        if not newcomers:
            return result
        phase = _open(track, host, group, now, newcomers)
        result.opened.append(_open_record(phase, host, group))
        result.changed = True

    if complete:
        quiet = first_sight and not alert_on_first_sight
        result.completed.append(_close(track, host, group, now, fired=not quiet))
        result.changed = True
    elif not tasks and not any(m.present for m in phase.members.values()):
        # Every task vanished before the group was seen complete (cleaned or removed between two polls):
        # the outcome is unknown, so nothing is reported as completed.
        result.abandoned.append(_close(track, host, group, now, fired=False, status="abandoned"))
        result.changed = True
    return result


def _new(track: GroupTrack, tasks: Iterable[Task]) -> list[Task]:
    """The tasks, in order, that :func:`_is_new` accepts. Against the watermark as an instant: most tasks of a
    large state are finished and older, and comparing two datetimes costs a tenth of :func:`micros` (exact:
    ``from_micros`` is, inside datetime's range)."""
    watermark = track.watermark
    if watermark is None:
        return list(tasks)
    if not _MIN_MICROS <= watermark <= _MAX_MICROS:
        return [t for t in tasks if _is_new(track, t)]
    since = from_micros(watermark)
    return [t for t in tasks if t.state in UNFINISHED_KEYS or t.created_at > since]


def _refresh_by_id(phase: OpenPhase, by_id: dict[int, Task]) -> tuple[bool, set[int]]:
    """:func:`_refresh` when task ids are unique: a member is present when the task of its id was created at
    its instant. Returns whether anything changed, and the ids of the tasks that are members."""
    changed = False
    matched = []
    members = phase.members
    get = by_id.get
    for key, member in members.items():
        task = get(member.id)
        if task is not None:
            delta = task.created_at - _EPOCH  # micros(), inline: this loop runs once per member
            if (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds == member.created:
                matched.append(member.id)
                if task.state != member.state or task.label != member.label or not member.present:
                    members[key] = _member(task)
                    changed = True
                continue
        if member.present:
            member.present = False
            changed = True
    return changed, set(matched)


def _is_new(track: GroupTrack, task: Task) -> bool:
    """Not part of a completed phase: created after the watermark, or restarted in place (unfinished)."""
    if track.watermark is None or task.state in UNFINISHED_KEYS:
        return True
    return micros(task.created_at) > track.watermark


def _member(task: Task) -> Member:
    return Member(
        id=task.id,
        created=micros(task.created_at),
        state=task.state,
        label=task.label,
        start=None if task.start is None else micros(task.start),
        end=None if task.end is None else micros(task.end),
    )


def _refresh(phase: OpenPhase, present: dict[str, Task]) -> bool:
    """Update the members' last seen state; return whether anything changed."""
    changed = False
    for key, member in phase.members.items():
        task = present.get(key)
        if task is None:
            if member.present:
                member.present = False
                changed = True
            continue
        if task.state != member.state or not member.present or task.label != member.label:
            fresh = _member(task)
            phase.members[key] = fresh
            changed = True
    return changed


def _finished_before(phase: OpenPhase, newcomers: Iterable[Task]) -> bool:
    """Did every member finish (or vanish finished) before the first newcomer was even created?"""
    last_end = 0
    for member in phase.members.values():
        if member.state in UNFINISHED_KEYS:
            if member.present:
                return False
            continue  # vanished unfinished (`pueue remove`): it holds nothing up
        if member.end is None:
            return False  # no end time (v3, killed by a daemon restart): cannot tell, keep one phase
        last_end = max(last_end, member.end)
    return last_end > 0 and min(micros(t.created_at) for t in newcomers) > last_end


def _open(track: GroupTrack, host: str, group: str, now: datetime, tasks: Sequence[Task]) -> OpenPhase:
    first = min(tasks, key=lambda t: (t.created_at, t.id))
    first_key = key_of(first)
    track.restarts = track.restarts + 1 if first_key == track.last_first_key else 0
    track.last_first_key = first_key
    # Deterministic: two watchers that saw the same history give the same phase (and event) ids.
    suffix = f"~{track.restarts}" if track.restarts else ""
    phase_id = f"{host}/{group}/{first_key}{suffix}"
    track.phase = OpenPhase(
        id=phase_id, opened_at=micros(now), members={key_of(t): _member(t) for t in tasks}
    )
    return track.phase


def _open_record(phase: OpenPhase, host: str, group: str) -> PhaseRecord:
    return PhaseRecord(
        id=phase.id,
        host=host,
        group=group,
        status="open",
        opened_at=from_micros(phase.opened_at),
        tasks=len(phase.members),
    )


def _close(
    track: GroupTrack, host: str, group: str, now: datetime, *, fired: bool, status: PhaseStatus = "completed"
) -> PhaseRecord:
    phase = track.phase
    assert phase is not None
    members = list(phase.members.values())
    counts: Counter[str] = Counter()
    for member in members:
        # A task that vanished unfinished (`pueue remove` of a queued task) has no result: it is counted as
        # removed and does not decide the outcome, which is success when every task that ran succeeded.
        counts["removed" if member.state in UNFINISHED_KEYS else member.state] += 1
    results = counts.keys() - {"removed"}
    failed = sorted(
        (m for m in members if m.state != "success" and m.state not in UNFINISHED_KEYS),
        key=lambda m: (m.created, m.id),
    )
    starts = [m.start for m in members if m.start is not None]
    ends = [m.end for m in members if m.end is not None]
    record = PhaseRecord(
        id=phase.id,
        host=host,
        group=group,
        status=status,
        opened_at=from_micros(phase.opened_at),
        completed_at=now,
        outcome=("success" if results == {"success"} else "failed") if status == "completed" else None,
        counts=dict(sorted(counts.items())),
        tasks=len(members),
        first_start=from_micros(min(starts)) if starts else None,
        last_end=from_micros(max(ends)) if ends else None,
        failed_labels=[_label(m.label, m.id) for m in failed[:MAX_FAILED_LABELS]],
        fired=fired,
    )
    newest = max(m.created for m in members)
    track.watermark = newest if track.watermark is None else max(track.watermark, newest)
    track.phase = None
    return record
