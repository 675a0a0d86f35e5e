"""The daemon's answers to client requests (pueued's `message_handler/*.rs`).

Each handler runs under the state lock and returns a response dict: `success`/`failure` carry the
text pueue prints (success on stdout; a failure exits 1 and goes to stderr in 4.x, to stdout in 3.x);
`state`, `groups` and `log` carry data. A handler calls `d.save()` only where pueued saves (see
`daemon.py`): stash, enqueue, parallel and restart --in-place do not. Response texts are pueue's,
e.g. "New task added (id 4).", "Tasks removed from list: 0, 1\\nThe command failed for tasks: 7",
"All finished tasks have been removed from group 'x'".
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from .state import DEFAULT_GROUP, new_group, status_name, task_result, to_wire
from .timefmt import format_ts, now_ns

if TYPE_CHECKING:
    from .daemon import Daemon

Response = dict[str, Any]
Handler = Callable[["Daemon", dict[str, Any]], Response]
HANDLERS: dict[str, Handler] = {}


def success(text: str) -> Response:
    return {"type": "success", "text": text}


def failure(text: str) -> Response:
    return {"type": "failure", "text": text}


def handler(name: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        HANDLERS[name] = func
        return func

    return register


# ------------------------------------------------------------------------------------ helpers


def _rust_list(items: list[Any]) -> str:
    """`{:?}` of a `Vec`: `["default", "p1"]`, `[5, 6]`."""
    return "[" + ", ".join(f'"{i}"' if isinstance(i, str) else str(i) for i in items) + "]"


def ensure_group(d: Daemon, group: str) -> Response | None:
    if group in d.state["groups"]:
        return None
    return failure(f"Group {group} doesn't exists. Use one of these: {_rust_list(list(d.state['groups']))}")


def selection(request: dict[str, Any]) -> tuple[str, Any]:
    """`selection_from_params`: `--all`, else `--group`, else the ids, else the default group."""
    sel = request.get("selection") or {}
    if sel.get("all"):
        return "all", None
    if sel.get("group") is not None:
        return "group", sel["group"]
    if sel.get("ids"):
        return "ids", list(sel["ids"])
    return "group", DEFAULT_GROUP


def compile_response(message: str, matching: list[int], mismatching: list[int]) -> Response:
    """`compile_task_response`: the ids an action worked for, and those it failed for."""
    ok = ", ".join(str(i) for i in matching)
    if not mismatching:
        return success(f"{message}: {ok}")
    bad = ", ".join(str(i) for i in mismatching)
    if not matching:
        return failure(f"The command failed for tasks: {bad}")
    return success(f"{message}: {ok}\nThe command failed for tasks: {bad}")


def filter_ids(d: Daemon, ids: list[int], statuses: tuple[str, ...]) -> tuple[list[int], list[int]]:
    matching, mismatching = [], []
    for task_id in ids:
        task = d.state["tasks"].get(task_id)
        if task is not None and status_name(task["status"]) in statuses:
            matching.append(task_id)
        else:
            mismatching.append(task_id)
    return matching, mismatching


def is_removable(
    d: Daemon, task_id: int, to_delete: Collection[int], dependants: Dependants | None = None
) -> bool:
    """A task that a not-yet-Done task depends on may only go together with that dependant
    (``state.rs::is_task_removable``). ``dependants``: :func:`dependants_of`, built once per request: pueued
    scans every task for each id (O(ids × tasks)), which is quick in Rust and far too slow in Python."""
    found = (dependants if dependants is not None else dependants_of(d)).get(task_id, ())
    if not found:
        return True
    if not all(i in to_delete for i in found):
        return False
    return all(is_removable(d, i, to_delete, dependants) for i in found)


Dependants = dict[int, list[int]]


def dependants_of(d: Daemon) -> Dependants:
    """For each task id, the not-yet-Done tasks that depend on it."""
    found: Dependants = {}
    for task in d.state["tasks"].values():
        if task["dependencies"] and status_name(task["status"]) != "Done":
            for dependency in task["dependencies"]:
                found.setdefault(dependency, []).append(task["id"])
    return found


def group_task_ids(d: Daemon, group: str, statuses: tuple[str, ...]) -> list[int]:
    return [
        i for i, t in d.state["tasks"].items() if t["group"] == group and status_name(t["status"]) in statuses
    ]


def format_enqueue_at(ns: int) -> str:
    """`enqueue_at.format("%Y-%m-%d %H:%M:%S")` in the daemon's local time."""
    return format_ts(ns)[:19].replace("T", " ")


# ------------------------------------------------------------------------------------ requests


@handler("status")
def status(d: Daemon, request: dict[str, Any]) -> Response:
    return {"type": "state", "state": to_wire(d.state)}


@handler("group")
def group(d: Daemon, request: dict[str, Any]) -> Response:
    action = request.get("action", "list")
    name = request.get("name", "")
    if action == "list":
        return {"type": "groups", "groups": d.state["groups"]}
    if action == "add":
        if name in d.state["groups"]:
            return failure(f'Group "{name}" already exists')
        parallel_tasks = request.get("parallel")
        d.state["groups"][name] = new_group(1 if parallel_tasks is None else parallel_tasks)
        d.save()
        if d.flavor == "v3":  # 3.x hands the group to its task handler and answers at once
            return success(f'Group "{name}" is being created')
        return success(f'New group "{name}" has been created')
    if (missing := ensure_group(d, name)) is not None:
        return missing
    if name == DEFAULT_GROUP:
        return failure("You cannot delete the default group")
    if any(t["group"] == name for t in d.state["tasks"].values()):
        return failure("You cannot remove a group, if there're still tasks in it.")
    del d.state["groups"][name]
    d.save()
    return success(f'Group "{name}" has been removed')


@handler("add")
def add(d: Daemon, request: dict[str, Any]) -> Response:
    group_name = request["group"]
    if (missing := ensure_group(d, group_name)) is not None:
        return missing
    not_found = [i for i in request["dependencies"] if i not in d.state["tasks"]]
    if not_found:
        return failure(f"Unable to setup dependencies : task(s) {_rust_list(not_found)} not found")
    original = request["command"]
    aliases = d.settings.aliases()
    first, sep, rest = original.partition(" ")
    command = aliases[first] + sep + rest if first in aliases else original
    task = d.model.new_task(
        command=command,
        original_command=original,
        path=request["path"],
        envs=d.shuffled(request["envs"]),
        group=group_name,
        dependencies=sorted(set(request["dependencies"])),
        priority=request.get("priority") or 0,
        label=request.get("label"),
        stashed=bool(request.get("stashed")),
        enqueue_at=request.get("enqueue_at"),
        now=now_ns(),
    )
    task_id = max(d.state["tasks"], default=-1) + 1
    task["id"] = task_id
    d.state["tasks"][task_id] = task
    d.save()
    if request.get("immediate"):
        d.spawn(task_id)
        d.save()
    if request.get("print_task_id"):
        return success(str(task_id))
    text = f"New task added (id {task_id})."
    if request.get("enqueue_at") is not None:
        text = text[:-1] + f". It will be enqueued at {format_enqueue_at(request['enqueue_at'])}"
    if d.state["groups"][group_name]["status"] == "Paused":
        text += "\nThe group of this task is currently paused!"
    return success(text)


@handler("clean")
def clean(d: Daemon, request: dict[str, Any]) -> Response:
    successful_only = bool(request.get("successful_only"))
    group_name = request.get("group")
    dependants = dependants_of(d)
    for task_id, task in list(d.state["tasks"].items()):
        result = task_result(task)
        if result is None or not is_removable(d, task_id, (), dependants):
            continue
        if successful_only and result != "Success":
            continue
        if group_name is not None and task["group"] != group_name:
            continue
        del d.state["tasks"][task_id]
        d.clean_log(task_id)
    d.save()
    text = "All" + (" successfully" if successful_only else "") + " finished tasks have been removed"
    if group_name is not None:
        text += f" from group '{group_name}'"
    return success(text)


@handler("remove")
def remove(d: Daemon, request: dict[str, Any]) -> Response:
    matching, mismatching = filter_ids(d, request["ids"], ("Queued", "Stashed", "Done", "Locked"))
    dependants = dependants_of(d)
    for task_id in list(matching):
        if not is_removable(d, task_id, set(matching), dependants):
            matching.remove(task_id)
            mismatching.append(task_id)
    for task_id in matching:
        del d.state["tasks"][task_id]
        d.clean_log(task_id)
    d.save()
    return compile_response("Tasks removed from list", matching, mismatching)


def _pause_task(d: Daemon, task_id: int) -> None:
    task = d.state["tasks"][task_id]
    if status_name(task["status"]) == "Running" and task_id in d.children:
        d.signal_task(task_id, signal.SIGSTOP)
        d.model.set_paused(task, True)


def _resume_task(d: Daemon, task_id: int) -> None:
    task = d.state["tasks"][task_id]
    if status_name(task["status"]) == "Paused" and task_id in d.children:
        d.signal_task(task_id, signal.SIGCONT)
        d.model.set_paused(task, False)


@handler("pause")
def pause(d: Daemon, request: dict[str, Any]) -> Response:
    kind, value = selection(request)
    wait = bool(request.get("wait"))
    if kind == "ids":
        matching, mismatching = filter_ids(d, value, ("Running",))
        response = compile_response("Tasks have been paused", matching, mismatching)
        for task_id in matching:
            _pause_task(d, task_id)
    else:
        if kind == "group" and (missing := ensure_group(d, value)) is not None:
            return missing
        names = [value] if kind == "group" else list(d.state["groups"])
        for name in names:
            d.state["groups"][name]["status"] = "Paused"
            if not wait:
                for task_id in group_task_ids(d, name, ("Running",)):
                    _pause_task(d, task_id)
        response = success(
            f'Group "{value}" is being paused.' if kind == "group" else "All groups are being paused."
        )
    d.save()
    return response


@handler("start")
def start(d: Daemon, request: dict[str, Any]) -> Response:
    kind, value = selection(request)
    if kind == "ids":
        matching, mismatching = filter_ids(d, value, ("Paused", "Queued", "Stashed"))
        response = compile_response("Tasks have been started/resumed", matching, mismatching)
        for task_id in matching:
            if status_name(d.state["tasks"][task_id]["status"]) == "Paused":
                _resume_task(d, task_id)
            else:
                d.spawn(task_id)
    else:
        if kind == "group" and (missing := ensure_group(d, value)) is not None:
            return missing
        names = [value] if kind == "group" else list(d.state["groups"])
        for name in names:
            d.state["groups"][name]["status"] = "Running"
            for task_id in group_task_ids(d, name, ("Paused",)):
                _resume_task(d, task_id)
        response = success(
            f'Group "{value}" is being resumed.' if kind == "group" else "All groups are being resumed."
        )
    d.save()
    return response


SIGNALS = {
    "sigint": signal.SIGINT,
    "sigkill": signal.SIGKILL,
    "sigterm": signal.SIGTERM,
    "sigcont": signal.SIGCONT,
    "sigstop": signal.SIGSTOP,
}


def _parse_signal(name: str) -> int | None:
    key = name.lower()
    if key.isdigit():
        return int(key)
    return SIGNALS.get(key if key.startswith("sig") else "sig" + key)


def _should_pause(d: Daemon, group_name: str) -> bool:
    """A user's kill of a group pauses it when it still holds queued (or scheduled) tasks."""
    for task in d.state["tasks"].values():
        if task["group"] != group_name:
            continue
        status = task["status"]
        if status_name(status) == "Queued" or (
            status_name(status) == "Stashed" and status["Stashed"]["enqueue_at"] is not None
        ):
            return True
    return False


def kill_selection(d: Daemon, kind: str, value: Any, issued_by_user: bool, sig: int = signal.SIGKILL) -> None:
    if kind == "ids":
        ids = value
    elif kind == "group":
        if issued_by_user and _should_pause(d, value):
            d.state["groups"][value]["status"] = "Paused"
        ids = group_task_ids(d, value, ("Running", "Paused"))
    else:
        if issued_by_user and any(_should_pause(d, name) for name in d.state["groups"]):
            for group_state in d.state["groups"].values():
                group_state["status"] = "Paused"
        ids = list(d.children)
    for task_id in ids:
        d.signal_task(task_id, sig)


@handler("kill")
def kill(d: Daemon, request: dict[str, Any]) -> Response:
    kind, value = selection(request)
    if kind == "group" and (missing := ensure_group(d, value)) is not None:
        return missing
    sig_name = request.get("signal")
    sig = signal.SIGKILL
    if sig_name is not None:
        parsed = _parse_signal(sig_name)
        if parsed is None:
            return failure(f"Unknown signal {sig_name}")
        sig = parsed
    if kind == "ids":
        matching, mismatching = filter_ids(d, value, ("Running", "Paused"))
        response = compile_response("Tasks are being killed", matching, mismatching)
        value = matching
    elif sig_name is not None:
        response = success(
            f"Sending signal {sig_name} to all running tasks"
            + (f" of group {value}." if kind == "group" else ".")
        )
    elif kind == "group":
        response = success(f'All tasks of group "{value}" are being killed. The group will also be paused!!!')
    else:
        response = success("All tasks are being killed. All groups will be paused!!!")
    kill_selection(d, kind, value, True, sig)
    d.save()
    return response


@handler("parallel")
def parallel(d: Daemon, request: dict[str, Any]) -> Response:
    name = request.get("group") or DEFAULT_GROUP
    if (missing := ensure_group(d, name)) is not None:
        return missing
    d.state["groups"][name]["parallel_tasks"] = request["parallel_tasks"]
    return success(f'Parallel tasks setting for group "{name}" adjusted')


@handler("stash")
def stash(d: Daemon, request: dict[str, Any]) -> Response:
    matching, mismatching = filter_ids(d, request["ids"], ("Queued", "Locked"))
    for task_id in matching:
        d.model.set_stashed(d.state["tasks"][task_id], None)
    if d.flavor == "v4":
        # 4.0.4's stash handler reuses enqueue's wording, and counts Stashed/Locked tasks as matching.
        matching, mismatching = filter_ids(d, request["ids"], ("Stashed", "Locked"))
        return compile_response("Stashed tasks have been enqueued", matching, mismatching)
    return compile_response("Tasks are stashed", matching, mismatching)


@handler("enqueue")
def enqueue(d: Daemon, request: dict[str, Any]) -> Response:
    kind, value = selection(request)
    enqueue_at = request.get("enqueue_at")
    wanted = ("Stashed", "Locked")
    if kind == "ids":
        ids = [
            i for i in value if i in d.state["tasks"] and status_name(d.state["tasks"][i]["status"]) in wanted
        ]
    elif kind == "group":
        ids = group_task_ids(d, value, wanted)
    else:
        ids = [i for i, t in d.state["tasks"].items() if status_name(t["status"]) in wanted]
    for task_id in ids:
        task = d.state["tasks"][task_id]
        if enqueue_at is not None:
            d.model.set_stashed(task, enqueue_at)
        else:
            d.model.set_queued(task, now_ns())
    if d.flavor == "v3" and kind == "ids":  # 3.4.1's enqueue.rs: ids only, matched before the change
        matching = [i for i in value if i in ids]
        mismatching = [i for i in value if i not in ids]
        text = (
            "Tasks are enqueued"
            if enqueue_at is None
            else f"Tasks will be enqueued at {format_enqueue_at(enqueue_at)}"
        )
        return compile_response(text, matching, mismatching)
    if kind == "ids":
        target = ("Stashed",) if enqueue_at is not None else ("Queued",)
        matching, mismatching = filter_ids(d, value, target)
        if enqueue_at is not None:
            return compile_response(
                f"Stashed tasks will be enqueued at {format_enqueue_at(enqueue_at)}", matching, mismatching
            )
        return compile_response("Stashed tasks have been enqueued", matching, mismatching)
    if enqueue_at is not None:
        when = format_enqueue_at(enqueue_at)
        return success(
            f"Enqueue stashed tasks of group {value} at {when}."
            if kind == "group"
            else f"Enqueue all stashed tasks at {when}."
        )
    return success(
        f'All stashed tasks of group "{value}" have been enqueued.'
        if kind == "group"
        else "All stashed tasks have been enqueued."
    )


@handler("restart")
def restart(d: Daemon, request: dict[str, Any]) -> Response:
    """`restart --in-place`: Done tasks go back to Queued (or Stashed) with their possibly edited
    command, path, label and priority. No save (restart.rs in 3.4.1 and 4.0.4)."""
    ids = [t["task_id"] for t in request["tasks"]]
    matching, mismatching = filter_ids(d, ids, ("Done",))
    response = compile_response("Tasks restarted" if d.flavor == "v3" else "Tasks has restarted", matching,
                                mismatching)  # fmt: skip
    aliases = d.settings.aliases()
    for entry in request["tasks"]:
        task = d.state["tasks"].get(entry["task_id"])
        if task is None or status_name(task["status"]) != "Done":
            continue
        if request.get("stashed"):
            d.model.set_stashed(task, None)
        else:
            d.model.set_queued(task, now_ns())
        original = entry["original_command"]
        first, sep, rest = original.partition(" ")
        task["original_command"] = original
        task["command"] = aliases[first] + sep + rest if first in aliases else original
        task["path"] = entry["path"]
        task["label"] = entry["label"]
        task["priority"] = entry["priority"]
        if d.flavor == "v3":  # 3.x resets the times of the previous run
            task["start"] = task["end"] = None
    if request.get("start_immediately"):
        start(d, {"selection": {"ids": ids}})
    return response


@handler("reset")
def reset(d: Daemon, request: dict[str, Any]) -> Response:
    groups = request.get("groups") or []
    if d.flavor == "v3":
        # 3.x: kill everything, then (once the children are gone) back up and clear the state.
        d.full_reset = True
        kill_selection(d, "all", None, False)
        return success("Everything is being reset right now.")
    for name in groups:
        if name not in d.state["groups"]:
            return failure(f"Group '{name}' doesn't exist.")
    for name in groups or list(d.state["groups"]):
        d.state["groups"][name]["status"] = "Reset"
        kill_selection(d, "group", name, False)
    d.save()
    return success("Everything is being reset right now.")


@handler("log")
def log(d: Daemon, request: dict[str, Any]) -> Response:
    sel = request.get("selection") or {}
    if sel.get("ids"):
        ids = [i for i in sel["ids"] if i in d.state["tasks"]]
    elif sel.get("all") or (d.flavor == "v3" and sel.get("group") is None):
        ids = list(d.state["tasks"])  # `--all`; 3.x shows every task when nothing is selected
    else:  # 4.x without arguments: only the default group
        name = sel.get("group") or DEFAULT_GROUP
        ids = [i for i, t in d.state["tasks"].items() if t["group"] == name]
    lines = request.get("lines")
    logs = {}
    for task_id in sorted(ids):
        try:
            output = d.log_path(task_id).read_bytes().decode("utf-8", "replace")
        except OSError:
            output = ""
        if lines is not None:
            output = "\n".join(output.splitlines()[-lines:]) if lines else ""
        task = dict(d.state["tasks"][task_id])
        task["envs"] = {}
        logs[str(task_id)] = {"task": task, "output": output}
    return {"type": "log", "logs": logs}


@handler("shutdown")
def shutdown(d: Daemon, request: dict[str, Any]) -> Response:
    return success("Daemon is shutting down")


@handler("sim-lock")
def sim_lock(d: Daemon, request: dict[str, Any]) -> Response:
    """Test hook (no pueue equivalent): what `pueue edit` does while the editor is open."""
    matching, mismatching = filter_ids(d, request["ids"], ("Queued", "Stashed"))
    for task_id in matching:
        d.model.lock(d.state["tasks"][task_id])
    d.save()
    return compile_response("Tasks are locked", matching, mismatching)


@handler("sim-unlock")
def sim_unlock(d: Daemon, request: dict[str, Any]) -> Response:
    """Test hook: what `pueue edit` does when the editor closes without changes."""
    matching, mismatching = filter_ids(d, request["ids"], ("Locked",))
    for task_id in matching:
        d.model.unlock(d.state["tasks"][task_id])
    d.save()
    return compile_response("Tasks are unlocked", matching, mismatching)
