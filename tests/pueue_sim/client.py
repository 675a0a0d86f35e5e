"""`pueue`: the command line client.

Order of events, as in pueue's `main`: parse the arguments (a usage error exits 2, `--version`
prints `pueue 3.4.1` / `pueue 4.0.0` and needs neither config nor daemon), read the config (none
found -> "Couldn't find a configuration file. Did you start the daemon yet?", exit 1), connect to
the daemon (down -> "... while connecting to daemon. Did you start it?", exit 1), then run the
command. Success messages go to stdout; a request the daemon refuses exits 1 with its answer on stderr
in 4.x and on stdout in 3.x (`print_error` is `eprintln!` in 4.0.4's display_helper.rs, `println!` in
3.4.1's display/mod.rs).

`status --json` prints the state in the *client's* time zone, with each task's `envs` in a fresh
random order (every process deserialises into a new `HashMap`); `-g` and query words only filter
`tasks`, `groups` always lists every group. `add` sends the whole environment of this process and
its working directory.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import shlex
import sys
import time
from typing import Any, NoReturn

from . import errors
from .config import ConfigError, read_settings
from .protocol import Connection, connect
from .state import (
    dumps,
    external_groups,
    external_state,
    external_task,
    from_wire,
    result_name,
    status_name,
    task_result,
)
from .timefmt import NS, now_ns, parse_ts

MAIN_LOCATION = {"v3": "pueue/src/bin/pueue.rs:80", "v4": "pueue/src/bin/pueue.rs:56"}
FLAVOR = ["v4"]  # set by `run`: where a refused request's answer is printed


class ClapParser(argparse.ArgumentParser):
    """argparse with clap's way of failing: `error: ...` on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(
            f"error: {message}\n\n{self.format_usage().replace('usage:', 'Usage:')}\n"
            "For more information, try '--help'.\n"
        )
        sys.exit(2)


def _ids(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("task_ids", type=int, nargs="+" if required else "*")


def _selection(parser: argparse.ArgumentParser) -> None:
    _ids(parser)
    parser.add_argument("-g", "--group")
    parser.add_argument("-a", "--all", action="store_true")


def build_parser(version: str) -> ClapParser:
    parser = ClapParser(prog="pueue", description="Interact with the Pueue daemon")
    parser.add_argument("-V", "--version", action="version", version=f"pueue {version}")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("--color", choices=["auto", "never", "always"], default="auto")
    parser.add_argument("-c", "--config")
    parser.add_argument("-p", "--profile")
    sub = parser.add_subparsers(dest="cmd", parser_class=ClapParser)

    add = sub.add_parser("add")
    add.add_argument("-w", "--working-directory")
    add.add_argument("-e", "--escape", action="store_true")
    add.add_argument("-i", "--immediate", action="store_true")
    add.add_argument("-s", "--stashed", action="store_true")
    add.add_argument("-d", "--delay")
    add.add_argument("-g", "--group", default="default")
    add.add_argument("-a", "--after", type=int, nargs="+", default=[])
    add.add_argument("-o", "--priority", type=int)
    add.add_argument("-l", "--label")
    add.add_argument("-p", "--print-task-id", action="store_true")
    add.add_argument("-f", "--follow", action="store_true")
    add.add_argument("command", nargs=argparse.REMAINDER)

    status = sub.add_parser("status")
    status.add_argument("-j", "--json", action="store_true")
    status.add_argument("-g", "--group")
    status.add_argument("query", nargs="*")

    group = sub.add_parser("group")
    group.add_argument("-j", "--json", action="store_true")
    group_sub = group.add_subparsers(dest="action", parser_class=ClapParser)
    group_add = group_sub.add_parser("add")
    group_add.add_argument("name")
    group_add.add_argument("-p", "--parallel", type=int)
    group_remove = group_sub.add_parser("remove")
    group_remove.add_argument("name")

    clean = sub.add_parser("clean")
    clean.add_argument("-s", "--successful-only", action="store_true")
    clean.add_argument("-g", "--group")

    for name in ("pause", "start", "kill"):
        cmd = sub.add_parser(name)
        _selection(cmd)
        cmd.add_argument("-c", "--children", action="store_true")
        if name == "pause":
            cmd.add_argument("-w", "--wait", action="store_true")
        if name == "kill":
            cmd.add_argument("-s", "--signal")

    _ids(sub.add_parser("remove"), required=True)
    _ids(sub.add_parser("stash"), required=True)

    restart = sub.add_parser("restart")
    _ids(restart)
    restart.add_argument("-a", "--all-failed", action="store_true")
    restart.add_argument("-g", "--failed-in-group")
    restart.add_argument("-k", "--start-immediately", action="store_true")
    restart.add_argument("-s", "--stashed", action="store_true")
    restart.add_argument("-i", "--in-place", action="store_true")
    restart.add_argument("--not-in-place", action="store_true")

    enqueue = sub.add_parser("enqueue")
    _selection(enqueue)
    enqueue.add_argument("-d", "--delay")

    parallel = sub.add_parser("parallel")
    parallel.add_argument("parallel_tasks", type=int, nargs="?")
    parallel.add_argument("-g", "--group")

    reset = sub.add_parser("reset")
    reset.add_argument("-f", "--force", action="store_true")
    reset.add_argument("-g", "--groups", nargs="+", default=[])
    reset.add_argument("-c", "--children", action="store_true")

    wait = sub.add_parser("wait")
    _selection(wait)
    wait.add_argument("-q", "--quiet", action="store_true")
    wait.add_argument(
        "-s",
        "--status",
        choices=["done", "Done", "success", "Success", "queued", "Queued", "running", "Running"],
    )

    log = sub.add_parser("log")
    _selection(log)
    log.add_argument("-l", "--lines", type=int)
    log.add_argument("-f", "--full", action="store_true")
    log.add_argument("-j", "--json", action="store_true")

    sub.add_parser("shutdown")
    # Test hooks, no pueue equivalent: lock/unlock tasks the way an open `pueue edit` does.
    _ids(sub.add_parser("_sim-lock"), required=True)
    _ids(sub.add_parser("_sim-unlock"), required=True)
    return parser


# ------------------------------------------------------------------------------------ helpers

_UNITS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}


def parse_delay(text: str) -> int:
    """`--delay`: seconds, `10m`/`in 2 hours`, or a date `2025-06-11 03:00:00` (local time)."""
    value = text.strip().lower().removeprefix("in ").strip()
    if value.isdigit():
        return now_ns() + int(value) * NS
    m = re.fullmatch(r"(\d+)\s*([a-z]+)", value)
    if m and m.group(2) in _UNITS:
        return now_ns() + int(m.group(1)) * _UNITS[m.group(2)] * NS
    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})(?:[t ](\d{2}):(\d{2})(?::(\d{2}))?)?", value)
    if m:
        parts = [int(p) if p else 0 for p in m.groups()]
        return int(time.mktime((*parts, 0, 0, -1))) * NS
    try:
        return parse_ts(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"could not parse delay {text!r}") from None


def fail(flavor: str, chain: list[str], location: str | None = None) -> NoReturn:
    sys.stderr.write(errors.render(flavor, chain, location or MAIN_LOCATION[flavor]))
    sys.exit(1)


def handle_simple(conn: Connection, request: dict[str, Any]) -> dict[str, Any]:
    conn.send(request)
    response = conn.receive()
    if response is None:
        raise ConnectionError("daemon closed the connection")
    if response["type"] == "success":
        print(response["text"], flush=True)
    elif response["type"] == "failure":
        print(response["text"], file=sys.stderr if FLAVOR[0] == "v4" else sys.stdout, flush=True)
        sys.exit(1)
    return response


def get_state(conn: Connection) -> dict[str, Any]:
    conn.send({"cmd": "status"})
    response = conn.receive()
    if response is None:
        raise ConnectionError("daemon closed the connection")
    state = from_wire(response["state"])
    rng = random.Random()
    for task in state["tasks"].values():  # a fresh HashMap per task: fresh iteration order
        keys = list(task["envs"])
        rng.shuffle(keys)
        task["envs"] = {k: task["envs"][k] for k in keys}
    return state


def selection_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "all": bool(getattr(args, "all", False)),
        "group": getattr(args, "group", None),
        "ids": list(getattr(args, "task_ids", []) or []),
    }


def selection_debug(sel: dict[str, Any]) -> str:
    """`{:?}` of pueue's `TaskSelection`."""
    if sel["all"]:
        return "All"
    if sel["group"] is not None:
        return f'Group("{sel["group"]}")'
    if sel["ids"]:
        return "TaskIds([" + ", ".join(str(i) for i in sel["ids"]) + "])"
    return 'Group("default")'


def selected_tasks(state: dict[str, Any], sel: dict[str, Any]) -> list[dict[str, Any]]:
    tasks = [state["tasks"][i] for i in sorted(state["tasks"])]
    if sel["all"]:
        return tasks
    if sel["group"] is not None:
        return [t for t in tasks if t["group"] == sel["group"]]
    if sel["ids"]:
        return [t for t in tasks if t["id"] in sel["ids"]]
    return [t for t in tasks if t["group"] == "default"]


# ------------------------------------------------------------------------------------ status


_QUERY_STATUS = {
    "queued": lambda t: status_name(t["status"]) == "Queued",
    "stashed": lambda t: status_name(t["status"]) == "Stashed",
    "paused": lambda t: status_name(t["status"]) == "Paused",
    "running": lambda t: status_name(t["status"]) == "Running",
    "locked": lambda t: status_name(t["status"]) == "Locked",
    "success": lambda t: task_result(t) == "Success",
    "failed": lambda t: task_result(t) not in (None, "Success"),
}


def apply_query(flavor: str, tasks: list[dict[str, Any]], query: list[str]) -> list[dict[str, Any]]:
    """A subset of pueue's query language: `status=..`, `label=..`, `first N`, `last N`; `columns=..`
    and `order_by ..` are accepted and, like in pueue's JSON output, change nothing."""
    words = " ".join(query).split()
    limit: tuple[str, int] | None = None
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("status="):
            check = _QUERY_STATUS.get(word.split("=", 1)[1])
            if check is None:
                fail(flavor, ["Failed to parse query", f"unknown status in {word!r}"])
            tasks = [t for t in tasks if check(t)]
        elif word.startswith("label="):
            tasks = [t for t in tasks if t["label"] == word.split("=", 1)[1]]
        elif word.startswith("columns="):
            pass
        elif word in ("first", "last") and i + 1 < len(words) and words[i + 1].isdigit():
            limit = (word, int(words[i + 1]))
            i += 1
        elif word == "order_by":
            i += 1
            if i + 1 < len(words) and words[i + 1] in ("asc", "desc"):
                i += 1
        else:
            fail(flavor, ["Failed to parse query", f"unexpected {word!r}"])
        i += 1
    if limit is not None:
        tasks = tasks[: limit[1]] if limit[0] == "first" else tasks[-limit[1] :] if limit[1] else []
    return tasks


def human_status(task: dict[str, Any]) -> str:
    result = task_result(task)
    if result is None:
        return status_name(task["status"])
    name = result_name(result)
    return f"Failed ({result['Failed']})" if name == "Failed" else name


def print_table(state: dict[str, Any], tasks: list[dict[str, Any]]) -> None:
    if not state["tasks"]:
        print("Task list is empty. Add tasks with `pueue add -- [cmd]`")
        return
    for name in sorted(state["groups"]):
        group_tasks = [t for t in tasks if t["group"] == name]
        if not group_tasks:
            continue
        group = state["groups"][name]
        label = {"Running": "running", "Paused": "paused", "Reset": "resetting"}[group["status"]]
        print(f'Group "{name}" ({group["parallel_tasks"]} parallel): {label}')
        rows = [("Id", "Status", "Label", "Command", "Path")]
        rows += [
            (str(t["id"]), human_status(t), t["label"] or "", t["command"], t["path"]) for t in group_tasks
        ]
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        print()


def cmd_status(flavor: str, conn: Connection, args: argparse.Namespace) -> None:
    state = get_state(conn)
    tasks = [state["tasks"][i] for i in sorted(state["tasks"])]
    if args.group is not None:
        tasks = [t for t in tasks if t["group"] == args.group]
    tasks = apply_query(flavor, tasks, args.query)
    if args.json:
        sys.stdout.write(dumps(external_state(state, None, [t["id"] for t in tasks])) + "\n")
    else:
        print_table(state, tasks)


# ------------------------------------------------------------------------------------ wait


def _reached(task: dict[str, Any], target: str) -> bool:
    name = status_name(task["status"])
    if target == "queued":
        return name in ("Queued", "Running", "Done")
    if target == "running":
        return name in ("Running", "Done")
    if target == "success":
        return task_result(task) == "Success"
    return name == "Done"


def _finished_text(task: dict[str, Any]) -> str:
    result = task_result(task)
    task_id = task["id"]
    name = result_name(result)
    return {
        "Success": f"Task {task_id} succeeded with 0",
        "DependencyFailed": f"Task {task_id} failed due to failed dependencies",
        "FailedToSpawn": f"Task {task_id} failed to spawn",
        "Errored": f"Task {task_id} experienced an IO error.",
        "Killed": f"Task {task_id} has been killed",
    }.get(name) or f"Task {task_id} failed with {result['Failed']}"


def cmd_wait(flavor: str, conn: Connection, args: argparse.Namespace) -> int:
    """`pueue wait`: poll every 2 s (250 ms when `PUEUED_TEST_ENV_VARIABLE` is set, as in pueue)."""
    sel = selection_of(args)
    target = (args.status or "done").lower()
    watched: dict[int, Any] = {}
    finished: set[int] = set()
    first_run = True
    interval = 0.25 if "PUEUED_TEST_ENV_VARIABLE" in os.environ else 2.0
    while True:
        state = get_state(conn)
        tasks = selected_tasks(state, sel)
        if not tasks:
            message = f"No tasks found for selection {selection_debug(sel)}"
            print(message, file=sys.stdout if flavor == "v3" else sys.stderr, flush=True)
            return 0
        clock = time.strftime("%H:%M:%S")
        for task in tasks:
            task_id, status = task["id"], task["status"]
            if task_id not in watched:
                if task_id in finished:
                    continue
                watched[task_id] = status
                if args.quiet:
                    continue
                if not first_run:
                    print(f"{clock} - New task {task_id} with status {status_name(status)}", flush=True)
                elif status_name(status) in ("Running", "Paused"):
                    print(
                        f"{clock} - Found active Task {task_id} with status {status_name(status)}", flush=True
                    )
                continue
            previous = watched[task_id]
            if previous == status:
                continue
            watched[task_id] = status
            if args.quiet:
                continue
            if status_name(status) == "Done":
                print(f"{clock} - {_finished_text(task)}", flush=True)
            else:
                change = f"changed from {status_name(previous)} to {status_name(status)}"
                print(f"{clock} - Task {task_id} {change}", flush=True)
        by_id = {t["id"]: t for t in tasks}
        for task_id in list(watched):
            task = by_id.get(task_id)
            if task is None:
                del watched[task_id]
                continue
            if _reached(task, target):
                del watched[task_id]
                finished.add(task_id)
            if target == "success" and task_result(task) not in (None, "Success"):
                return 1
        if not watched:
            return 0
        time.sleep(interval)
        first_run = False


# ------------------------------------------------------------------------------------ others


def cmd_add(flavor: str, conn: Connection, args: argparse.Namespace) -> None:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        ClapParser(prog="pueue add").error(
            "the following required arguments were not provided:\n  <COMMAND>..."
        )
    if args.escape:
        command = [shlex.quote(part) for part in command]
    try:
        delay = parse_delay(args.delay) if args.delay is not None else None
    except argparse.ArgumentTypeError as err:
        ClapParser(prog="pueue add").error(f"invalid value for '--delay <DELAY>': {err}")
    envs = {k: v for k, v in os.environ.items() if _is_unicode(k) and _is_unicode(v)}
    path = args.working_directory or os.getcwd()
    handle_simple(
        conn,
        {
            "cmd": "add",
            "command": " ".join(command),
            "path": path,
            "envs": envs,
            "group": args.group,
            "dependencies": args.after,
            "priority": args.priority,
            "label": args.label,
            "stashed": args.stashed,
            "enqueue_at": delay,
            "immediate": args.immediate,
            "print_task_id": args.print_task_id,
        },
    )


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def cmd_group(flavor: str, conn: Connection, args: argparse.Namespace) -> None:
    if args.action == "add":
        handle_simple(conn, {"cmd": "group", "action": "add", "name": args.name, "parallel": args.parallel})
        return
    if args.action == "remove":
        handle_simple(conn, {"cmd": "group", "action": "remove", "name": args.name})
        return
    response = handle_simple(conn, {"cmd": "group", "action": "list"})
    groups = external_groups(response["groups"])
    if args.json:
        sys.stdout.write(dumps(groups) + "\n")
        return
    labels = {"Running": "running", "Paused": "paused", "Reset": "resetting"}
    print(
        "\n".join(
            f'Group "{n}" ({g["parallel_tasks"]} parallel): {labels[g["status"]]}' for n, g in groups.items()
        )
    )


def cmd_log(flavor: str, conn: Connection, args: argparse.Namespace) -> None:
    lines = None if args.full else args.lines
    if lines is None and not args.full and not args.json:
        lines = 15
    response = handle_simple(conn, {"cmd": "log", "selection": selection_of(args), "lines": lines})
    logs = response["logs"]
    if args.json:
        out = {k: {"task": external_task(v["task"]), "output": v["output"]} for k, v in logs.items()}
        sys.stdout.write(dumps(out) + "\n")
        return
    for key, entry in logs.items():
        task = entry["task"]
        print(f"--- Task {key}: {human_status(task)}")
        print(f"Command: {task['command']}")
        print(f"Path: {task['path']}")
        if entry["output"]:
            print("output:")
            print(entry["output"])


def cmd_restart(flavor: str, conn: Connection, args: argparse.Namespace) -> None:
    """`pueue restart` (client side, as in restart.rs): in place, one Restart request for the Done tasks;
    otherwise one Add request per task, a copy with its envs. Prints which ids it restarted."""
    state = get_state(conn)
    done = [i for i in sorted(state["tasks"]) if task_result(state["tasks"][i]) is not None]
    if args.all_failed or args.failed_in_group is not None:
        group = args.failed_in_group
        matching = [i for i in done if task_result(state["tasks"][i]) != "Success"
                    and (group is None or state["tasks"][i]["group"] == group)]  # fmt: skip
        mismatching: list[int] = []
    elif not args.task_ids:
        fail(flavor, ["Please provide the ids of the tasks you want to restart."])
    else:
        matching = [i for i in args.task_ids if i in done]
        mismatching = [i for i in args.task_ids if i not in done]
    tasks = [state["tasks"][i] for i in matching]
    if args.in_place and not args.not_in_place:
        entries = [
            {"task_id": t["id"], "original_command": t["original_command"], "path": t["path"],
             "label": t["label"], "priority": t["priority"]}
            for t in tasks
        ]  # fmt: skip
        request = {"cmd": "restart", "tasks": entries, "stashed": args.stashed,
                   "start_immediately": args.start_immediately}  # fmt: skip
        _refused(flavor, conn, request)
    else:
        for task in tasks:
            request = {"cmd": "add", "command": task["original_command"], "path": task["path"],
                       "envs": task["envs"], "group": task["group"], "dependencies": [],
                       "priority": task["priority"], "label": task["label"], "stashed": args.stashed,
                       "enqueue_at": None, "immediate": args.start_immediately}  # fmt: skip
            _refused(flavor, conn, request)
    if matching:
        print(f"Restarted tasks: [{', '.join(map(str, matching))}]")
    if mismatching:
        print(f"Couldn't restart tasks: [{', '.join(map(str, mismatching))}]", file=sys.stderr)


def _refused(flavor: str, conn: Connection, request: dict[str, Any]) -> None:
    """Send; a Failure answer becomes the error of `main` (`bail!(message)`)."""
    conn.send(request)
    response = conn.receive()
    if response is None:
        raise ConnectionError("daemon closed the connection")
    if response["type"] == "failure":
        fail(flavor, [response["text"]])


def dispatch(flavor: str, conn: Connection, args: argparse.Namespace) -> int:
    cmd = args.cmd or "status"
    if cmd == "status":
        if args.cmd is None:
            args.json, args.group, args.query = False, None, []
        cmd_status(flavor, conn, args)
    elif cmd == "wait":
        return cmd_wait(flavor, conn, args)
    elif cmd == "add":
        cmd_add(flavor, conn, args)
    elif cmd == "group":
        cmd_group(flavor, conn, args)
    elif cmd == "log":
        cmd_log(flavor, conn, args)
    elif cmd == "clean":
        handle_simple(conn, {"cmd": "clean", "successful_only": args.successful_only, "group": args.group})
    elif cmd in ("pause", "start", "kill"):
        request = {"cmd": cmd, "selection": selection_of(args)}
        if cmd == "pause":
            request["wait"] = args.wait
        if cmd == "kill":
            request["signal"] = args.signal
        handle_simple(conn, request)
    elif cmd in ("remove", "stash", "_sim-lock", "_sim-unlock"):
        handle_simple(conn, {"cmd": cmd.lstrip("_"), "ids": args.task_ids})
    elif cmd == "restart":
        cmd_restart(flavor, conn, args)
    elif cmd == "enqueue":
        delay = parse_delay(args.delay) if args.delay is not None else None
        handle_simple(conn, {"cmd": "enqueue", "selection": selection_of(args), "enqueue_at": delay})
    elif cmd == "parallel":
        if args.parallel_tasks is None:
            args.json, args.action = False, None
            cmd_group(flavor, conn, args)
        else:
            handle_simple(
                conn, {"cmd": "parallel", "parallel_tasks": args.parallel_tasks, "group": args.group}
            )
    elif cmd == "reset":
        handle_simple(conn, {"cmd": "reset", "groups": args.groups})
    elif cmd == "shutdown":
        handle_simple(conn, {"cmd": "shutdown"})
    return 0


def run(flavor: str, version: str, argv: list[str]) -> int:
    """Entry point of the simulated `pueue`."""
    gc.disable()  # short-lived; a 76 MB state makes millions of objects and the collector crawl
    FLAVOR[0] = flavor
    args = build_parser(version).parse_args(argv)
    try:
        settings, found = read_settings(args.config, flavor)
    except ConfigError as err:
        fail(flavor, err.chain)
    if not found:
        fail(flavor, ["Couldn't find a configuration file. Did you start the daemon yet?"])
    try:
        conn, daemon_version = connect(settings, flavor)
    except ConfigError as err:
        fail(flavor, err.chain, err.location)
    json_mode = getattr(args, "json", False)
    if daemon_version.split(".")[0] != version.split(".")[0]:
        # A 3.x client cannot talk to a 4.x daemon and vice versa: the messages do not deserialise.
        if not json_mode:
            sys.stderr.write(
                f"WARN Different daemon version detected '{daemon_version}'. "
                "Consider restarting the daemon.\n"
            )
        conn.close()
        fail(flavor, ["Couldn't deserialize message:\nunknown variant, the daemon speaks another protocol"])
    if daemon_version != version and not json_mode:
        sys.stderr.write(
            f"WARN Different daemon version detected '{daemon_version}'. Consider restarting the daemon.\n"
        )
    try:
        return dispatch(flavor, conn, args)
    except (ConnectionError, OSError) as err:
        fail(flavor, ["Failed to receive message from daemon.", str(err)])
    finally:
        conn.close()
