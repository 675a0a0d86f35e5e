"""Decode ``pueue status --json``, ``pueue group --json`` and pueue's ``state.json`` (v3.2–3.4 and v4.0).

The wire shapes are described in ``shared/fixtures/pueue/README.md``. The decoder is msgspec with typed
structs: fields that are not declared (``envs``, ``command``, ``path`` …) are skipped by the tokenizer without
building Python objects, which is what keeps a 76 MB state file cheap to read. Unknown fields are tolerated.

Every failure, whatever the input, is a :class:`~watcher.errors.PueueParseError` whose message names the task
(``task 12: …``) or the byte offset.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from watcher.errors import PueueParseError
from watcher.pueue.model import Group, Result, Snapshot, Status, Task


class _Task(msgspec.Struct):
    id: int
    created_at: datetime
    group: str
    status: str | dict[str, Any]
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
_TIMES = ("enqueued_at", "start", "end")
_STATUS_NAMES = frozenset(s.value for s in Status)
_RESULT_NAMES = frozenset(r.value for r in Result)


def parse_status(data: bytes) -> Snapshot:
    """Parse ``pueue status --json`` output or a state file's content."""
    state = _decode(_state_decoder, data)
    tasks = []
    is_v3 = False
    for key, raw in state.tasks.items():
        try:
            tasks.append(_task(raw))
        except (ValueError, TypeError, KeyError) as exc:
            raise PueueParseError(f"task {_clip(key)}: {exc}") from None
        is_v3 = is_v3 or raw.start is not msgspec.UNSET
    fmt = ("v3" if is_v3 else "v4") if tasks else "unknown"
    return Snapshot(groups=_groups(state.groups), tasks=tuple(tasks), format=fmt)


def parse_groups(data: bytes) -> dict[str, Group]:
    """Parse ``pueue group --json`` (the groups map, with no wrapper)."""
    return _groups(_decode(_groups_decoder, data))


def _decode(decoder: msgspec.json.Decoder[Any], data: bytes) -> Any:
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


def _which_task(data: bytes, message: str) -> str:
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
    name, inner = _tag(raw.status, "status")
    if name not in _STATUS_NAMES:
        raise ValueError(f"unknown status {_clip(name)!r}")
    status = Status(name)
    times: dict[str, datetime | None] = {
        field: value for field in _TIMES if isinstance(value := getattr(raw, field), datetime | None)
    }
    result = exit_code = None
    if isinstance(inner, dict) and status is not Status.LOCKED:
        times.update({f: _time(inner[f]) for f in _TIMES if f in inner})
    if status is Status.DONE:
        # v4: {"Done": {"result": R, ...}}; v3: {"Done": R}.
        outcome = inner["result"] if isinstance(inner, dict) and "result" in inner else inner
        result_name, detail = _tag(outcome, "result")
        if result_name not in _RESULT_NAMES:
            raise ValueError(f"unknown result {_clip(result_name)!r}")
        result = Result(result_name)
        if result is Result.FAILED:
            if not isinstance(detail, int) or isinstance(detail, bool):
                raise ValueError("Failed result without an integer exit code")
            exit_code = detail
    return Task(
        id=raw.id,
        created_at=raw.created_at,
        group=raw.group,
        label=raw.label,
        status=status,
        result=result,
        exit_code=exit_code,
        **times,
    )


def _tag(value: object, what: str) -> tuple[str, object]:
    """Split an externally tagged serde enum: ``"Name"`` or ``{"Name": inner}``."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and len(value) == 1:
        ((name, inner),) = value.items()
        return str(name), inner
    raise ValueError(f"{what} is neither a name nor a one-key object")


def _time(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"timestamp is not a string: {_clip(repr(value))}")
    return datetime.fromisoformat(value)


def _clip(text: str, limit: int = 80) -> str:
    """Keep error messages to one short line, whatever the remote side sent."""
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "…"
