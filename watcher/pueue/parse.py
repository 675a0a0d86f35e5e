"""Decode ``pueue status --json``, ``pueue group --json`` and pueue's ``state.json`` (v3.2–3.4 and v4.0).

The wire shapes are described in ``tests/fixtures/pueue/README.md``. The decoder is msgspec with typed
structs: fields that are not declared (``envs``, ``command``, ``path`` …) are skipped by the tokenizer without
building Python objects, which is what keeps a 76 MB state file cheap to read. Status and result names decode
straight into enum singletons, and a status object into a small struct with one field per variant, so that
the intermediate objects stay small (a state of 53,000 tasks: bench/status_large.py).

A mapped state file (a memoryview of a whole mmap, as ``read_local_state`` gives) is decoded a few MB of
tasks at a time (:func:`_decode_mapped`), handing the pages already decoded back to the kernel, so that the
mapping and the decoded tasks are never both whole in memory. Its answer and its errors are those of the
one-pass decode, which it falls back to on anything unusual.

Every failure, whatever the input, is a :class:`~watcher.errors.PueueParseError` whose message names the task
(``task 12: …``) or the byte offset.
"""

from __future__ import annotations

import gc
import mmap
import re
from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from watcher.errors import PueueParseError, TooManyGroups
from watcher.pueue.model import BytesLike, Group, Result, Snapshot, Status, Task, state_key

#: pueue (chrono) always writes a UTC offset; a time without one cannot be compared with any other.
Instant = Annotated[datetime, msgspec.Meta(tz=True)]
#: A task id is a Rust usize counted up from 0; ids beyond int64 (msgspec's bound) could not be stored.
TaskId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class _ResultObject(msgspec.Struct, gc=False):
    """A result given as a one-key object: ``{"Failed": 1}`` or ``{"FailedToSpawn": "…"}``."""

    Failed: int | UnsetType = UNSET
    FailedToSpawn: str | UnsetType = UNSET


class _Body(_ResultObject, gc=False):
    """The inner object of a status. v4 keeps the times and ``result`` here; v3's ``{"Done": {"Failed": 1}}``
    puts the result object itself here (hence the inherited fields). Unknown keys (``previous_status``,
    ``enqueued_at``) are skipped."""

    start: Instant | None = None
    end: Instant | None = None
    result: Result | _ResultObject | UnsetType = UNSET


class _StatusObject(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """``{"Variant": body}``: one field per variant of pueue's externally tagged ``TaskStatus``. An unknown
    variant is an error raised while decoding, so that its message can name the task and the variant."""

    Queued: _Body | UnsetType = UNSET
    Stashed: _Body | UnsetType = UNSET
    Running: _Body | UnsetType = UNSET
    Paused: _Body | UnsetType = UNSET
    Locked: _Body | UnsetType = UNSET
    Done: Result | _Body | UnsetType = UNSET


class _Task(msgspec.Struct, gc=False):
    id: TaskId
    created_at: Instant
    group: str
    status: Status | _StatusObject
    label: str | None = None
    dependencies: tuple[TaskId, ...] = ()  # a tuple: the empty one is a singleton, no list per task
    # v3 only; v4 keeps these inside the status object. Absent ≠ null: absence tells v4.
    start: Instant | UnsetType | None = UNSET
    end: Instant | UnsetType | None = UNSET


class _Group(msgspec.Struct):
    status: str
    parallel_tasks: int = 1


class _State(msgspec.Struct):
    tasks: dict[int, _Task]  # int keys: smaller than 53,000 strings
    # Kept raw, skipped at C speed: the groups are decoded once they are known to be few (_groups_of).
    groups: msgspec.Raw


class _RawTasks(msgspec.Struct):
    tasks: dict[str, msgspec.Raw]


_state_decoder = msgspec.json.Decoder(_State)
_tasks_decoder = msgspec.json.Decoder(dict[int, _Task])
_groups_decoder = msgspec.json.Decoder(dict[str, _Group | str])
_raw_tasks_decoder = msgspec.json.Decoder(_RawTasks)
_task_decoder = msgspec.json.Decoder(_Task)


def parse_status(data: BytesLike) -> Snapshot:
    """Parse ``pueue status --json`` output or a state file's content."""
    return snapshot_of(decode_status(data))


def decode_status(data: BytesLike) -> Decoded:
    """The first half of :func:`parse_status`: after it, ``data`` is no longer needed (a caller holding a
    76 MB mapping releases it before the tasks are built, which lowers the peak memory)."""
    if isinstance(data, memoryview) and isinstance(data.obj, mmap.mmap):
        decoded = _decode_mapped(data, data.obj)
        if decoded is not None:
            return decoded
    state = _decode(_state_decoder, data)
    # The raw groups would keep the caller's buffer (a mapped file) exported, and so unreleasable.
    state.groups = state.groups.copy()
    return Decoded(state)


class Decoded:
    """A decoded document, not yet turned into a :class:`Snapshot`: either the decoded state, or (a mapped
    file) the groups and the tasks already built."""

    __slots__ = ("built", "state")

    def __init__(self, state: _State, built: tuple[list[Task], bool] | None = None) -> None:
        self.state = state
        self.built = built  # (the tasks, whether the format is v3)


#: A mapped state file is decoded this many bytes at a time, and each part read handed back to the kernel; a
#: smaller file is decoded in one pass.
DROP_STEP = 2 << 20

_HEAD = b'{"tasks":{'
#: Where one task ends and the next begins in pueue's compact JSON: ``…},"123":{…``. In valid JSON a ``"``
#: outside a string is never escaped, so this can only be a key at some depth; a split at the wrong depth
#: leaves a part with unbalanced braces, which fails to decode.
_BOUNDARY = re.compile(rb'\},"[0-9]+":\{')


def _decode_mapped(view: memoryview, mapping: mmap.mmap) -> Decoded | None:
    """Decode a mapped state file a few MB of tasks at a time (each part copied, decoded, turned into tasks),
    handing the pages already decoded back to the kernel (``MADV_DONTNEED``: a shared file mapping reads
    them back from the page cache if touched again), so that the file and the decoded tasks are never both
    whole in memory.

    None when the input is not laid out as pueue writes it (compact JSON, ``tasks`` first), repeats a task,
    or fails to decode or convert: the caller then decodes it in one pass, which gives the same answer or the
    same error. Nothing kept refers to ``view``: the caller can release it and close the mapping."""
    size, step = view.nbytes, DROP_STEP
    if size <= step or size != len(mapping) or not hasattr(mapping, "madvise") or view[:10] != _HEAD:
        return None
    built: dict[int, Task] = {}
    is_v3 = False
    pos = len(_HEAD)  # the first task's key
    dropped = 0
    buffer = bytearray(2 * step + 2)  # one part at a time, as a JSON object: {"id":{…},…}
    buffer[0] = ord("{")
    gc_was_enabled = gc.isenabled()
    gc.disable()  # tens of thousands of small objects: see snapshot_of
    try:
        while size - pos > 2 * step:
            found = _BOUNDARY.search(mapping, pos + step, pos + 2 * step)
            if found is None:
                return None  # a task of megabytes: not worth splitting
            split = found.start() + 1  # after the task's closing brace
            length = split - pos + 2
            buffer[1 : length - 1] = view[pos:split]
            buffer[length - 1] = ord("}")
            with memoryview(buffer) as whole, whole[:length] as document:
                part = _tasks_decoder.decode(document)
            pos = split + 1  # after the comma
            is_v3 = _build(built, part) or is_v3
            del part
            upto = pos // mmap.PAGESIZE * mmap.PAGESIZE
            mapping.madvise(mmap.MADV_DONTNEED, dropped, upto - dropped)
            dropped = upto
        del buffer
        tail = b"".join((_HEAD, view[pos:]))
        if tail.find(b'"tasks":', len(_HEAD)) != -1:
            return None  # a second "tasks" (the last one wins), or a nested one: leave it to the one pass
        state = _state_decoder.decode(tail)
        del tail
        is_v3 = _build(built, state.tasks) or is_v3
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError, ValueError):
        return None  # the one-pass decode names the task (or the byte), as it always has
    finally:
        if gc_was_enabled:
            gc.enable()
    return Decoded(_State(tasks={}, groups=state.groups), (list(built.values()), is_v3))


def _build(built: dict[int, Task], part: dict[int, _Task]) -> bool:
    """Add the tasks of one part; whether one of them is v3. ValueError when a task repeats one of an earlier
    part (where the one-pass decode would keep only the last) or cannot be converted."""
    before = len(built)
    is_v3 = False
    for key, raw in part.items():
        built[key] = _task(raw)
        is_v3 = is_v3 or raw.start is not UNSET
    if len(built) != before + len(part):
        raise ValueError("a task is repeated")
    return is_v3


def snapshot_of(decoded: Decoded, max_groups: int | None = None) -> Snapshot:
    """The snapshot of a decoded document. ``max_groups``: more groups than this is :class:`TooManyGroups`,
    found before any of them is decoded."""
    state = decoded.state
    groups = _groups_of(state.groups, max_groups)
    if decoded.built is not None:
        built, is_v3 = decoded.built
        fmt = ("v3" if is_v3 else "v4") if built else "unknown"
        return Snapshot(groups=groups, tasks=tuple(built), format=fmt)
    tasks = []
    is_v3 = False
    # Tens of thousands of small objects: the cyclic GC would rescan them several times for nothing.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for key, raw in state.tasks.items():
            try:
                tasks.append(_task(raw))
            except ValueError as exc:
                raise PueueParseError(f"task {key}: {exc}") from None
            is_v3 = is_v3 or raw.start is not UNSET
    finally:
        if gc_was_enabled:
            gc.enable()
    fmt = ("v3" if is_v3 else "v4") if tasks else "unknown"
    return Snapshot(groups=groups, tasks=tuple(tasks), format=fmt)


def _groups_of(raw: msgspec.Raw, limit: int | None) -> dict[str, Group]:
    """The ``groups`` object, decoded only when it holds at most about ``limit`` entries. An entry as pueue
    writes it (``"name":{"status":…,"parallel_tasks":…}``) holds one comma and is followed by another, and a
    comma inside a name only raises the count: more than ``2 * limit`` commas, found in one C-speed pass, is
    more than ``limit`` groups."""
    if limit is not None:
        with memoryview(raw) as view:
            step = 1 << 20  # a copy of a MiB at a time: a memoryview cannot count
            commas = sum(view[i : i + step].tobytes().count(b",") for i in range(0, view.nbytes, step))
        if commas + 1 > 2 * limit:
            raise TooManyGroups(f"the host lists over {limit} groups ({commas} commas in them): not read")
    try:
        return _groups(_decode(_groups_decoder, raw))
    except PueueParseError as exc:  # say where, as a decode of the whole document would: `$.groups[...]`
        raise PueueParseError(str(exc).replace("`$", "`$.groups")) from None


def parse_groups(data: BytesLike) -> dict[str, Group]:
    """Parse ``pueue group --json`` (the groups map, with no wrapper)."""
    return _groups(_decode(_groups_decoder, data))


def _decode(decoder: msgspec.json.Decoder[Any], data: BytesLike) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if message.endswith("`") and "$.tasks[...]" in message:
            raise PueueParseError(_cut(_which_task(data, message))) from None
        raise PueueParseError(_cut(f"unexpected pueue JSON: {message}")) from None
    except msgspec.DecodeError as exc:
        message = str(exc)
        if "truncated" in message:
            message = f"pueue JSON is truncated at byte {len(memoryview(data))}"
        raise PueueParseError(_cut(message)) from None
    except UnicodeDecodeError as exc:
        # msgspec validates UTF-8 as it decodes a string; pueue (Rust) only ever writes valid UTF-8.
        raise PueueParseError(f"pueue JSON holds bytes that are not UTF-8: {exc.reason}") from None
    except RecursionError:
        # msgspec recurses into every nested value, even one it skips (an unknown field, ``envs``).
        raise PueueParseError("pueue JSON is nested too deeply") from None


def _which_task(data: BytesLike, message: str) -> str:
    """msgspec does not name the map key of a failing task; find it (only on this error path)."""
    try:
        raw_tasks = _raw_tasks_decoder.decode(data).tasks
    except (msgspec.MsgspecError, UnicodeDecodeError):
        return f"unexpected pueue JSON: {message}"
    for key, raw in raw_tasks.items():
        try:
            _task_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            return f"task {_clip(key)}: {_friendly(str(exc))}"
        except UnicodeDecodeError:
            continue  # a Raw keeps its bytes unchecked; this task is not the one msgspec refused
    return f"unexpected pueue JSON: {message}"


def _friendly(message: str) -> str:
    """msgspec's wording, turned into pueue's terms where it is about a status or a result."""
    what, _, where = message.partition(" - at ")
    if where == "`$.status`" and what.startswith(("Invalid enum value", "Object contains unknown field")):
        name = what.removeprefix("Invalid enum value ").removeprefix("Object contains unknown field ")
        return f"unknown status '{_clip(name.strip(chr(96) + chr(39)))}'"
    if where.startswith("`$.status.Done") and what.startswith("Invalid enum value"):
        return f"unknown result '{_clip(what.removeprefix('Invalid enum value ').strip(chr(39)))}'"
    return message


def _groups(raw: dict[str, _Group | str]) -> dict[str, Group]:
    groups = {}
    for name, value in raw.items():
        if isinstance(value, str):
            groups[name] = Group(name=name, status=value, parallel=1)
        else:
            groups[name] = Group(name=name, status=value.status, parallel=value.parallel_tasks)
    return groups


_PLAIN_RESULTS = frozenset({Result.SUCCESS, Result.KILLED, Result.ERRORED, Result.DEPENDENCY_FAILED})
_RESULT_STATE = {result: state_key(Status.DONE, result) for result in Result}


def _task(raw: _Task) -> Task:
    value = raw.status
    start, end = raw.start, raw.end  # v3 keeps the times on the task
    # Fast path for the bulk of a large state, v4 Done tasks with a plain result: halves the conversion time.
    if value.__class__ is _StatusObject and start is UNSET:
        body = value.Done
        if body.__class__ is _Body:
            outcome = body.result
            if outcome.__class__ is Result and outcome in _PLAIN_RESULTS:
                return Task(raw.id, raw.created_at, raw.group, raw.label, Status.DONE, outcome, None,
                            body.start, body.end, _RESULT_STATE[outcome])  # fmt: skip
    done: Result | _Body | UnsetType = UNSET
    if isinstance(value, Status):
        status = value
        if status is Status.DONE:
            raise ValueError("Done without a result")
    else:
        status, body = _variant(value)
        if isinstance(body, _Body) and start is UNSET and status is not Status.LOCKED:
            start, end = body.start, body.end  # v4 (a Locked body holds previous_status instead)
        done = value.Done
    result, exit_code = _result(done) if status is Status.DONE else (None, None)
    return Task(
        raw.id,
        raw.created_at,
        raw.group,
        raw.label,
        status,
        result,
        exit_code,
        None if start is UNSET else start,
        None if end is UNSET else end,
        state_key(status, result),
        raw.dependencies if status is not Status.DONE else (),
    )


def _variant(value: _StatusObject) -> tuple[Status, Result | _Body]:
    """serde writes exactly one key; the first variant present wins (Done first: most tasks are done)."""
    if value.Done is not UNSET:
        return Status.DONE, value.Done
    for status, body in (
        (Status.RUNNING, value.Running),
        (Status.QUEUED, value.Queued),
        (Status.STASHED, value.Stashed),
        (Status.PAUSED, value.Paused),
        (Status.LOCKED, value.Locked),
    ):
        if body is not UNSET:
            return status, body
    raise ValueError("status is neither a name nor a one-key object")


def _result(done: Result | _Body | UnsetType) -> tuple[Result, int | None]:
    """v3: ``{"Done": "Success"}`` / ``{"Done": {"Failed": 1}}``; v4: ``{"Done": {"result": …}}``."""
    outcome: Result | _ResultObject | UnsetType = done
    if isinstance(done, _Body) and done.result is not UNSET:
        outcome = done.result
    if isinstance(outcome, Result):
        if outcome in (Result.FAILED, Result.FAILED_TO_SPAWN):
            raise ValueError(f"result {outcome.value} without its detail")
        return outcome, None
    if isinstance(outcome, _ResultObject):
        if outcome.Failed is not UNSET and outcome.FailedToSpawn is UNSET:
            return Result.FAILED, outcome.Failed
        if outcome.FailedToSpawn is not UNSET and outcome.Failed is UNSET:
            return Result.FAILED_TO_SPAWN, None
    raise ValueError("Done holds an unknown result")


def _cut(message: str, limit: int = 300) -> str:
    """An error message of bounded length: msgspec quotes the offending value, which a host may make 1 MB."""
    return message if len(message) <= limit else message[: limit - 1] + "…"


def _clip(text: str, limit: int = 80) -> str:
    """Keep error messages to one short line, whatever the remote side sent."""
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "…"
