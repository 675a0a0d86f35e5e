"""pueue's `State` (tasks and groups) for v3.4 and v4.0, and its JSON form.

The in-memory form is the on-disk form with two changes: `tasks` is keyed by `int`, and every
timestamp (`created_at`, `enqueued_at`, `start`, `end`, `enqueue_at`) is an `int` of nanoseconds.
Every other value, the key order included, is exactly what pueue serialises:

* v3.4 task: `id, created_at, enqueued_at, original_command, command, path, envs, group,
  dependencies, priority, label, status, prev_status, start, end`; `status` is a string for
  Queued/Running/Paused/Locked, `{"Stashed": {"enqueue_at": ..}}` or `{"Done": R}`.
* v4.0 task: `id, created_at, original_command, command, path, envs, group, dependencies, priority,
  label, status`; every status is an object with one key that carries the times.
* group: `{"status": "Running"|"Paused"(|"Reset" in v4), "parallel_tasks": int}`.

`decode_state` is as strict as serde is for each version: a v4 daemon cannot read a v3 state (string
statuses, `{"Done": "Success"}`), a v3 daemon cannot read a v4 one (no `prev_status`); unknown keys
(e.g. the top-level `settings` of pre-3.0 files) are ignored.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

from .timefmt import Zone, format_ts, now_ns, parse_ts

FLAVORS = ("v3", "v4")
VERSIONS = {"v3": "3.4.1", "v4": "4.0.0"}
DEFAULT_GROUP = "default"
TS_KEYS = frozenset({"created_at", "enqueued_at", "start", "end", "enqueue_at"})

Task = dict[str, Any]
State = dict[str, Any]  # {"tasks": {int: Task}, "groups": {str: {"status", "parallel_tasks"}}}

_V3_PLAIN = ("Queued", "Running", "Paused", "Locked")
_RESULT_PLAIN = ("Success", "Killed", "Errored", "DependencyFailed")


class StateError(ValueError):
    """The JSON does not deserialise into this version's `State` (serde would fail)."""


# --------------------------------------------------------------------------------------------
# Tolerant readers (work on both shapes, like the README's "tolerant parser")
# --------------------------------------------------------------------------------------------


def status_name(status: Any) -> str:
    """`"Queued"` for `"Queued"` (v3) and for `{"Queued": {...}}` (v4)."""
    return status if isinstance(status, str) else next(iter(status))


def task_result(task: Task) -> Any:
    """The Done result (`"Success"`, `{"Failed": 1}`, ...) or None when the task is not Done."""
    status = task["status"]
    if status_name(status) != "Done":
        return None
    inner = status["Done"]
    if isinstance(inner, dict) and "result" in inner:
        return inner["result"]
    return inner


def result_name(result: Any) -> str:
    return result if isinstance(result, str) else next(iter(result))


def task_times(task: Task) -> dict[str, int | None]:
    """`enqueued_at`, `start`, `end` of a task from the v4 status object or the v3 task fields."""
    status = task["status"]
    inner: dict[str, Any] = {}
    if isinstance(status, dict):
        value = next(iter(status.values()))
        if isinstance(value, dict):
            inner = value
    if "prev_status" in task:  # v3
        return {"enqueued_at": task.get("enqueued_at"), "start": task.get("start"), "end": task.get("end")}
    return {"enqueued_at": inner.get("enqueued_at"), "start": inner.get("start"), "end": inner.get("end")}


def new_state() -> State:
    """`State::new()`: no tasks and the `default` group, Running with 1 parallel task."""
    return {"tasks": {}, "groups": {DEFAULT_GROUP: new_group()}}


def new_group(parallel_tasks: int = 1) -> dict[str, Any]:
    return {"status": "Running", "parallel_tasks": parallel_tasks}


# --------------------------------------------------------------------------------------------
# Status transitions, per version
# --------------------------------------------------------------------------------------------


class Model:
    """The status transitions the daemon performs, written for one pueue version."""

    flavor = ""

    def new_task(
        self,
        *,
        command: str,
        original_command: str,
        path: str,
        envs: dict[str, str],
        group: str,
        dependencies: list[int],
        priority: int,
        label: str | None,
        stashed: bool,
        enqueue_at: int | None,
        now: int,
    ) -> Task:
        raise NotImplementedError

    def set_running(self, task: Task, now: int) -> None:
        raise NotImplementedError

    def set_paused(self, task: Task, paused: bool) -> None:
        raise NotImplementedError

    def set_done(self, task: Task, result: Any, now: int, end: int | None = None) -> None:
        raise NotImplementedError

    def set_queued(self, task: Task, now: int) -> None:
        raise NotImplementedError

    def set_stashed(self, task: Task, enqueue_at: int | None) -> None:
        raise NotImplementedError

    def lock(self, task: Task) -> None:
        raise NotImplementedError

    def unlock(self, task: Task) -> None:
        raise NotImplementedError

    def restore(self, task: Task, now: int) -> None:
        """What `restore_state` does to one task when the daemon starts."""
        raise NotImplementedError


class V3Model(Model):
    """pueue 3.x: plain-string statuses plus task-level `enqueued_at`/`start`/`end`/`prev_status`."""

    flavor = "v3"

    def new_task(
        self,
        *,
        command,
        original_command,
        path,
        envs,
        group,
        dependencies,
        priority,
        label,
        stashed,
        enqueue_at,
        now,
    ):
        # `Task::new(.., TaskStatus::Locked, ..)` sets `prev_status` to Locked; `add` then sets the
        # real status, and `enqueued_at` (a moment after `created_at`) only for queued tasks.
        queued = not (stashed or enqueue_at is not None)
        return {
            "id": 0,
            "created_at": now,
            "enqueued_at": now_ns() if queued else None,
            "original_command": original_command,
            "command": command,
            "path": path,
            "envs": envs,
            "group": group,
            "dependencies": dependencies,
            "priority": priority,
            "label": label,
            "status": "Queued" if queued else {"Stashed": {"enqueue_at": enqueue_at}},
            "prev_status": "Locked",
            "start": None,
            "end": None,
        }

    def set_running(self, task, now):
        task["status"] = "Running"
        task["start"] = now
        task["end"] = None

    def set_paused(self, task, paused):
        task["status"] = "Paused" if paused else "Running"

    def set_done(self, task, result, now, end=None):
        if status_name(task["status"]) not in ("Running", "Paused"):
            task["start"] = now  # DependencyFailed / FailedToSpawn: start and end are "now"
        task["status"] = {"Done": result}
        task["end"] = end if end is not None else now

    def set_queued(self, task, now):
        task["status"] = "Queued"
        task["enqueued_at"] = now

    def set_stashed(self, task, enqueue_at):
        task["status"] = {"Stashed": {"enqueue_at": enqueue_at}}
        task["enqueued_at"] = None

    def lock(self, task):
        task["prev_status"] = task["status"]
        task["status"] = "Locked"

    def unlock(self, task):
        task["status"] = task["prev_status"]

    def restore(self, task, now):
        # 3.x sets `Done(Killed)` and leaves `end` alone, so it usually stays null.
        name = status_name(task["status"])
        if name in ("Running", "Paused"):
            task["status"] = {"Done": "Killed"}
        elif name == "Locked":
            task["status"] = {"Stashed": {"enqueue_at": None}}


class V4Model(Model):
    """pueue 4.0: every status is `{Name: {times...}}`; the times left the task level."""

    flavor = "v4"

    def new_task(
        self,
        *,
        command,
        original_command,
        path,
        envs,
        group,
        dependencies,
        priority,
        label,
        stashed,
        enqueue_at,
        now,
    ):
        # 4.0 takes `enqueued_at` before `Task::new` takes `created_at`: a few µs earlier.
        if stashed or enqueue_at is not None:
            status: Any = {"Stashed": {"enqueue_at": enqueue_at}}
        else:
            status = {"Queued": {"enqueued_at": now}}
        return {
            "id": 0,
            "created_at": max(now_ns(), now + 1),
            "original_command": original_command,
            "command": command,
            "path": path,
            "envs": envs,
            "group": group,
            "dependencies": dependencies,
            "priority": priority,
            "label": label,
            "status": status,
        }

    @staticmethod
    def _enqueued_at(task: Task, now: int) -> int:
        inner = next(iter(task["status"].values()))
        value = inner.get("enqueued_at") if isinstance(inner, dict) else None
        return value if value is not None else now

    def set_running(self, task, now):
        task["status"] = {"Running": {"enqueued_at": self._enqueued_at(task, now), "start": now}}

    def set_paused(self, task, paused):
        inner = next(iter(task["status"].values()))
        task["status"] = {("Paused" if paused else "Running"): dict(inner)}

    def set_done(self, task, result, now, end=None):
        name = status_name(task["status"])
        enqueued_at = self._enqueued_at(task, now)
        start = task["status"][name]["start"] if name in ("Running", "Paused") else now
        task["status"] = {
            "Done": {
                "enqueued_at": enqueued_at,
                "start": start,
                "end": end if end is not None else now,
                "result": result,
            }
        }

    def set_queued(self, task, now):
        task["status"] = {"Queued": {"enqueued_at": now}}

    def set_stashed(self, task, enqueue_at):
        task["status"] = {"Stashed": {"enqueue_at": enqueue_at}}

    def lock(self, task):
        task["status"] = {"Locked": {"previous_status": task["status"]}}

    def unlock(self, task):
        task["status"] = task["status"]["Locked"]["previous_status"]

    def restore(self, task, now):
        # 4.x sets `end` to the restart time.
        name = status_name(task["status"])
        if name in ("Running", "Paused"):
            inner = task["status"][name]
            task["status"] = {
                "Done": {
                    "enqueued_at": inner["enqueued_at"],
                    "start": inner["start"],
                    "end": now,
                    "result": "Killed",
                }
            }
        elif name == "Locked":
            task["status"] = {"Stashed": {"enqueue_at": None}}


MODELS: dict[str, Model] = {"v3": V3Model(), "v4": V4Model()}


# --------------------------------------------------------------------------------------------
# Strict decoding (what serde accepts for each version)
# --------------------------------------------------------------------------------------------


def _ts(value: Any, what: str, nullable: bool = False) -> int | None:
    if value is None and nullable:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise StateError(f"{what}: expected a timestamp, got {value!r}")
    try:
        return parse_ts(value)
    except ValueError as err:
        raise StateError(f"{what}: {err}") from err


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise StateError(f"{what}: expected an integer, got {value!r}")
    return value


def _str(value: Any, what: str, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise StateError(f"{what}: expected a string, got {value!r}")
    return value


def _single(value: Any, what: str) -> tuple[str, Any]:
    if not isinstance(value, dict) or len(value) != 1:
        raise StateError(f"{what}: expected an object with one key, got {value!r}")
    return next(iter(value.items()))


def _result(value: Any) -> Any:
    if isinstance(value, str):
        if value not in _RESULT_PLAIN:
            raise StateError(f"unknown task result {value!r}")
        return value
    key, inner = _single(value, "task result")
    if key == "Failed":
        return {"Failed": _int(inner, "Failed")}
    if key == "FailedToSpawn":
        return {"FailedToSpawn": _str(inner, "FailedToSpawn")}
    raise StateError(f"unknown task result {key!r}")


def _status_v3(value: Any) -> Any:
    if isinstance(value, str):
        if value not in _V3_PLAIN:
            raise StateError(f"unknown v3 status {value!r}")
        return value
    key, inner = _single(value, "status")
    if key == "Stashed":
        if not isinstance(inner, dict):
            raise StateError("Stashed: expected an object")
        return {"Stashed": {"enqueue_at": _ts(inner.get("enqueue_at"), "enqueue_at", True)}}
    if key == "Done":
        return {"Done": _result(inner)}
    raise StateError(f"unknown v3 status {key!r}")


_V4_FIELDS = {
    "Queued": ("enqueued_at",),
    "Running": ("enqueued_at", "start"),
    "Paused": ("enqueued_at", "start"),
    "Done": ("enqueued_at", "start", "end"),
}


def _status_v4(value: Any) -> Any:
    key, inner = _single(value, "status")
    if not isinstance(inner, dict):
        raise StateError(f"{key}: expected an object, got {inner!r}")
    if key == "Stashed":
        return {"Stashed": {"enqueue_at": _ts(inner.get("enqueue_at"), "enqueue_at", True)}}
    if key == "Locked":
        if "previous_status" not in inner:
            raise StateError("Locked: missing field `previous_status`")
        return {"Locked": {"previous_status": _status_v4(inner["previous_status"])}}
    if key not in _V4_FIELDS:
        raise StateError(f"unknown v4 status {key!r}")
    out: dict[str, Any] = {}
    for field in _V4_FIELDS[key]:
        if field not in inner:
            raise StateError(f"{key}: missing field `{field}`")
        out[field] = _ts(inner[field], field)
    if key == "Done":
        if "result" not in inner:
            raise StateError("Done: missing field `result`")
        out["result"] = _result(inner["result"])
    return {key: out}


def _envs(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise StateError("envs: expected an object of strings")
    return dict(value)


def decode_task(raw: Any, flavor: str) -> Task:
    if not isinstance(raw, dict):
        raise StateError("task: expected an object")
    for field in ("id", "original_command", "command", "path", "envs", "group", "dependencies", "status"):
        if field not in raw:
            raise StateError(f"task: missing field `{field}`")
    deps = raw["dependencies"]
    if not isinstance(deps, list):
        raise StateError("dependencies: expected a list")
    task: Task = {"id": _int(raw["id"], "id"), "created_at": _ts(raw.get("created_at"), "created_at")}
    if flavor == "v3":
        if "prev_status" not in raw:
            raise StateError("task: missing field `prev_status`")
        task["enqueued_at"] = _ts(raw.get("enqueued_at"), "enqueued_at", True)
    task.update(
        {
            "original_command": _str(raw["original_command"], "original_command"),
            "command": _str(raw["command"], "command"),
            "path": _str(raw["path"], "path"),
            "envs": _envs(raw["envs"]),
            "group": _str(raw["group"], "group"),
            "dependencies": [_int(d, "dependency") for d in deps],
            "priority": _int(raw.get("priority", 0), "priority"),
            "label": _str(raw.get("label"), "label", True),
        }
    )
    if flavor == "v3":
        task["status"] = _status_v3(raw["status"])
        task["prev_status"] = _status_v3(raw["prev_status"])
        task["start"] = _ts(raw.get("start"), "start", True)
        task["end"] = _ts(raw.get("end"), "end", True)
    else:
        task["status"] = _status_v4(raw["status"])
    return task


def decode_state(raw: Any, flavor: str) -> State:
    """Turn parsed JSON (strings for timestamps) into the in-memory state, strictly per version."""
    if not isinstance(raw, dict) or "tasks" not in raw or "groups" not in raw:
        raise StateError("state: expected an object with `tasks` and `groups`")
    allowed = ("Running", "Paused", "Reset") if flavor == "v4" else ("Running", "Paused")
    groups: dict[str, Any] = {}
    for name, group in raw["groups"].items():
        if not isinstance(group, dict) or group.get("status") not in allowed:
            raise StateError(f"group {name!r}: invalid group {group!r}")
        groups[name] = {
            "status": group["status"],
            "parallel_tasks": _int(group.get("parallel_tasks"), "parallel_tasks"),
        }
    tasks = {}
    for key, raw_task in raw["tasks"].items():
        task = decode_task(raw_task, flavor)
        tasks[int(key)] = task
    return {"tasks": tasks, "groups": groups}


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _external(value: Any, offset: Zone) -> Any:
    """Copy of `value` with every nanosecond timestamp formatted as RFC 3339."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "envs":
                out[key] = item
            elif key in TS_KEYS and isinstance(item, int):
                out[key] = format_ts(item, offset)
            else:
                out[key] = _external(item, offset)
        return out
    if isinstance(value, list):
        return [_external(item, offset) for item in value]
    return value


def dumps(value: Any) -> str:
    """serde_json's compact form: no spaces, UTF-8 kept, control characters escaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def external_task(task: Task, offset: Zone = None) -> Task:
    return _external(task, offset)


def external_groups(groups: dict[str, Any]) -> dict[str, Any]:
    return {name: dict(groups[name]) for name in sorted(groups)}


def external_state(state: State, offset: Zone = None, task_ids: list[int] | None = None) -> dict[str, Any]:
    """`{"tasks": {...}, "groups": {...}}` as pueue prints it: tasks sorted by id, groups by name."""
    ids = sorted(state["tasks"]) if task_ids is None else sorted(task_ids)
    return {
        "tasks": {str(i): _external(state["tasks"][i], offset) for i in ids},
        "groups": external_groups(state["groups"]),
    }


def encode_state(state: State, offset: Zone = None) -> str:
    """The state file / `status --json` text (without the trailing newline)."""
    return dumps(external_state(state, offset))


def to_wire(state: State) -> dict[str, Any]:
    """The state as the simulated daemon sends it to the client (nanosecond ints, string ids)."""
    return {"tasks": {str(k): v for k, v in state["tasks"].items()}, "groups": state["groups"]}


def from_wire(obj: dict[str, Any]) -> State:
    return {"tasks": {int(k): v for k, v in obj["tasks"].items()}, "groups": obj["groups"]}


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def state_path(pueue_directory: Path, compress: bool) -> Path:
    return pueue_directory / ("state.json.gz" if compress else "state.json")


def write_state_file(pueue_directory: Path, text: str, compress: bool = False) -> Path:
    """Atomic save like `State::save`: write `<name>.partial`, then rename it over `<name>`.

    v4 with `daemon.compress_state_file` writes gzip to `state.json.gz` (via
    `state.json.gz.partial`); an old `state.json` is left where it is.
    """
    real = state_path(pueue_directory, compress)
    temp = real.with_name(real.name + ".partial")
    data = text.encode("utf-8")
    if compress:
        data = gzip.compress(data, compresslevel=6)
    with open(temp, "wb") as handle:
        handle.write(data)
    os.replace(temp, real)
    return real


def read_state_file(path: Path) -> Any:
    """Parsed JSON of a state file (gzip if the name ends in `.gz`)."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return json.loads(data)
