"""Decode ``pueue status --json``, ``pueue group --json`` and pueue's ``state.json`` (v3.2–3.4 and v4.0).

The wire shapes are described in ``shared/fixtures/pueue/README.md``. The decoder is msgspec with typed
structs: fields that are not declared (``envs``, ``command``, ``path`` …) are skipped by the tokenizer without
building Python objects, which is what keeps a 76 MB state file cheap to read. Unknown fields are tolerated.

Every failure, whatever the input, is a :class:`~watcher.errors.PueueParseError` whose message names the task
(``task 12: …``) or the byte offset.
"""

from __future__ import annotations

import gc
from datetime import datetime
from typing import Any

import msgspec

from watcher.errors import PueueParseError
from watcher.pueue.model import Group, Result, Snapshot, Status, Task


class _Result(msgspec.Struct, gc=False):
    """A result given as a one-key object: ``{"Failed": 1}`` or ``{"FailedToSpawn": "…"}``."""

    Failed: int | msgspec.UnsetType = msgspec.UNSET
    FailedToSpawn: str | msgspec.UnsetType = msgspec.UNSET


class _Body(msgspec.Struct, gc=False):
    """The inner object of a status: v4 keeps times and ``result`` here; v3 ``{"Done": {"Failed": 1}}``
    puts the result object itself here. Unknown keys (``previous_status``) are skipped."""

    enqueued_at: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    result: str | _Result | msgspec.UnsetType = msgspec.UNSET
    Failed: int | msgspec.UnsetType = msgspec.UNSET
    FailedToSpawn: str | msgspec.UnsetType = msgspec.UNSET


class _Task(msgspec.Struct, gc=False):
    id: int
    created_at: datetime
    group: str
    status: str | dict[str, str | _Body]
    label: str | None = None
    # v3 only; v4 keeps these inside the status object. Absent ≠ null: absence tells v4.
    enqueued_at: datetime | msgspec.UnsetType | None = msgspec.UNSET
    start: datetime | msgspec.UnsetType | None = msgspec.UNSET
    end: datetime | msgspec.UnsetType | None = msgspec.UNSET


class _Group(msgspec.Struct):
    status: str
    parallel_tasks: int = 1


class _State(msgspec.Struct):
    tasks: dict[str, _Task]
    # pueue < 3.0 wrote a bare status string per group; tolerate it.
    groups: dict[str, _Group | str]


_state_decoder = msgspec.json.Decoder(_State)
_groups_decoder = msgspec.json.Decoder(dict[str, _Group | str])


class _RawTasks(msgspec.Struct):
    tasks: dict[str, msgspec.Raw]


_raw_tasks_decoder = msgspec.json.Decoder(_RawTasks)
_task_decoder = msgspec.json.Decoder(_Task)
_STATUS_BY_NAME = {s.value: s for s in Status}
_RESULT_BY_NAME = {r.value: r for r in Result}


def parse_status(data: bytes | bytearray | memoryview) -> Snapshot:
    """Parse ``pueue status --json`` output or a state file's content."""
    state = _decode(_state_decoder, data)
    tasks = []
    is_v3 = False
    # Tens of thousands of small objects: the cyclic GC would rescan them several times for nothing.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for key, raw in state.tasks.items():
            try:
                tasks.append(_task(raw))
            except (ValueError, TypeError) as exc:
                raise PueueParseError(f"task {_clip(key)}: {exc}") from None
            is_v3 = is_v3 or raw.start is not msgspec.UNSET
    finally:
        if gc_was_enabled:
            gc.enable()
    fmt = ("v3" if is_v3 else "v4") if tasks else "unknown"
    return Snapshot(groups=_groups(state.groups), tasks=tuple(tasks), format=fmt)


def parse_groups(data: bytes | bytearray | memoryview) -> dict[str, Group]:
    """Parse ``pueue group --json`` (the groups map, with no wrapper)."""
    return _groups(_decode(_groups_decoder, data))


def _decode(decoder: msgspec.json.Decoder[Any], data: bytes | bytearray | memoryview) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if message.endswith("`") and "$.tasks[...]" in message:
            raise PueueParseError(_which_task(data, message)) from None
        raise PueueParseError(f"unexpected pueue JSON: {message}") from None
    except msgspec.DecodeError as exc:
        message = str(exc)
        if "truncated" in message:
            message = f"pueue JSON is truncated at byte {len(data)}"
        raise PueueParseError(message) from None


def _which_task(data: bytes | bytearray | memoryview, message: str) -> str:
    """msgspec does not name the map key of a failing task; find it (only on this error path)."""
    try:
        raw_tasks = _raw_tasks_decoder.decode(data).tasks
    except msgspec.MsgspecError:
        return f"unexpected pueue JSON: {message}"
    for key, raw in raw_tasks.items():
        try:
            _task_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            return f"task {_clip(key)}: {exc}"
    return f"unexpected pueue JSON: {message}"


def _groups(raw: dict[str, _Group | str]) -> dict[str, Group]:
    groups = {}
    for name, value in raw.items():
        if isinstance(value, str):
            groups[name] = Group(name=name, status=value, parallel=1)
        else:
            groups[name] = Group(name=name, status=value.status, parallel=value.parallel_tasks)
    return groups


def _task(raw: _Task) -> Task:
    status_value = raw.status
    body: str | _Body | None = None
    if isinstance(status_value, str):
        name = status_value
    elif len(status_value) == 1:
        ((name, body),) = status_value.items()
    else:
        raise ValueError("status is neither a name nor a one-key object")
    status = _STATUS_BY_NAME.get(name)
    if status is None:
        raise ValueError(f"unknown status {_clip(name)!r}")
    enqueued_at, start, end = raw.enqueued_at, raw.start, raw.end  # v3
    if start is msgspec.UNSET and isinstance(body, _Body) and status is not Status.LOCKED:
        # v4 (a Locked body holds previous_status instead)
        enqueued_at, start, end = body.enqueued_at, body.start, body.end
    result = exit_code = None
    if status is Status.DONE:
        result, exit_code = _result(body)
    elif isinstance(body, str):
        raise ValueError(f"status {name} holds a bare string")
    return Task(
        raw.id,
        raw.created_at,
        raw.group,
        raw.label,
        status,
        result,
        exit_code,
        None if enqueued_at is msgspec.UNSET else enqueued_at,
        None if start is msgspec.UNSET else start,
        None if end is msgspec.UNSET else end,
    )


def _result(body: str | _Body | None) -> tuple[Result, int | None]:
    """v3: ``{"Done": "Success"}`` / ``{"Done": {"Failed": 1}}``; v4: ``{"Done": {"result": …}}``."""
    outcome: str | _Result | _Body | None = body
    if isinstance(body, _Body) and body.result is not msgspec.UNSET:
        outcome = body.result
    if isinstance(outcome, str):
        result = _RESULT_BY_NAME.get(outcome)
        if result is None or result in (Result.FAILED, Result.FAILED_TO_SPAWN):
            raise ValueError(f"unknown result {_clip(outcome)!r}")
        return result, None
    if outcome is None:
        raise ValueError("Done without a result")
    if outcome.Failed is not msgspec.UNSET and outcome.FailedToSpawn is msgspec.UNSET:
        return Result.FAILED, outcome.Failed
    if outcome.FailedToSpawn is not msgspec.UNSET and outcome.Failed is msgspec.UNSET:
        return Result.FAILED_TO_SPAWN, None
    raise ValueError("Done holds an unknown result")


def _clip(text: str, limit: int = 80) -> str:
    """Keep error messages to one short line, whatever the remote side sent."""
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "…"
