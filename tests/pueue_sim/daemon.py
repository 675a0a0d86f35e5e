"""`pueued`: owns the state, runs the tasks, answers the clients.

Start-up, in pueued's order:

1. Read the config (`config.read_settings`); when none is found write a default one.
2. Create `pueue_directory`, `task_logs/` and the shared secret.
3. Refuse to start when `pueue.pid` (in the runtime directory, see `config.py`) names a live process
   ("Pid file already exists and another daemon seems to be running."), otherwise write our pid into
   it. The runtime directory is not created: when it is missing, pueued fails with "Failed to create
   pid file." (pueue/src/daemon/pid.rs).
4. Restore `state.json` (`state.json.gz` with v4 `compress_state_file`). A state that does not
   deserialise for this version (a v3 file read by v4, say) is dropped with a warning and the daemon
   starts with only `default`. Restart semantics: Running/Paused -> Done/Killed (v3 leaves `end`
   alone, v4 sets it), Locked -> Stashed, a task of an unknown group moves to `default`, and every
   group that still holds a Queued task is Paused. Then the state is saved.
5. Bind the socket; a stale socket file is removed, a live one means another daemon is running.

Then a scheduler loop (every 0.1 s) does what pueue's task handler does: reap finished children
(exit 0 -> Success, other code -> Failed(code), killed by a signal -> Killed), finish resets, enqueue
delayed stashed tasks whose `enqueue_at` has passed, fail Queued tasks of groups that are not paused
whose dependency ended unsuccessfully (DependencyFailed), and start Queued tasks of Running groups by
priority then id, respecting `parallel_tasks` (0 = unlimited) and waiting for dependencies to succeed.

A task runs as `sh -c <command>` in its own process group, in `path`, with exactly its `envs` plus
`PUEUE_GROUP` and `PUEUE_WORKER_ID` (which are also written into the task's `envs`), stdin a pipe,
stdout and stderr to `task_logs/<id>.log`. Pausing sends SIGSTOP to the process group, resuming
SIGCONT, killing SIGKILL.

The state is saved (atomically, see `state.py`) where pueued saves it, and only there: after add,
clean, remove, edit, switch, env, group add/remove, pause, start, kill, a spawn, a finished task, a
delayed task enqueued, the v3 reset, and at start-up. NOT after marking dependants DependencyFailed,
stash, enqueue, parallel, restart --in-place, nor (v4) the end of a group reset: the file then lags
the daemon until the next save (verified in both versions' sources: see
tests/fixtures/pueue/README.md, "Save points").

SIGTERM/SIGINT (or `pueue shutdown`): kill the children, record them as Killed, save the state,
remove the socket and the pid file, exit 0.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import random
import secrets
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from . import errors
from .config import ConfigError, Settings, io_error_text, read_settings, rust_debug_path, save_default_config
from .handlers import HANDLERS, failure
from .protocol import Connection
from .state import (
    DEFAULT_GROUP,
    MODELS,
    StateError,
    Task,
    decode_state,
    encode_state,
    new_group,
    new_state,
    read_state_file,
    state_path,
    status_name,
    task_result,
    write_state_file,
)
from .timefmt import now_ns

TICK = 0.1

# Rust's `io::ErrorKind` names for the errors a spawn can hit.
_ERROR_KINDS = {
    errno.ENOENT: "NotFound",
    errno.EACCES: "PermissionDenied",
    errno.EPERM: "PermissionDenied",
    errno.ENOTDIR: "NotADirectory",
    errno.E2BIG: "ArgumentListTooLong",
    errno.ENOMEM: "OutOfMemory",
}


def rust_os_error_debug(err: OSError) -> str:
    """`{:?}` of a Rust `io::Error`:
    `Os { code: 2, kind: NotFound, message: "No such file or directory" }`."""
    code = err.errno or 0
    kind = _ERROR_KINDS.get(code, "Uncategorized")
    return f'Os {{ code: {code}, kind: {kind}, message: "{os.strerror(code)}" }}'


def process_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not a running daemon
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


@dataclass
class Child:
    process: subprocess.Popen[bytes]
    group: str
    worker_id: int
    log: IO[bytes]


class StartupError(Exception):
    """pueued gives up at start-up: pueue's error chain (outermost first) and the Location 4.x prints."""

    def __init__(self, chain: list[str], location: str) -> None:
        super().__init__(chain[-1])
        self.chain = chain
        self.location = location


class Daemon:
    def __init__(self, flavor: str, version: str, settings: Settings) -> None:
        self.flavor = flavor
        self.version = version
        self.settings = settings
        self.model = MODELS[flavor]
        self.lock = threading.RLock()
        self.state = new_state()
        self.children: dict[int, Child] = {}
        self.stopping = threading.Event()
        self.full_reset = False  # v3 `reset`: no new tasks until the children are gone
        self.secret = ""
        self.rng = random.Random()
        self.listener: socket.socket | None = None

    # ------------------------------------------------------------------ paths and persistence

    @property
    def pueue_dir(self) -> Path:
        return self.settings.pueue_directory

    def log_path(self, task_id: int) -> Path:
        return self.pueue_dir / "task_logs" / f"{task_id}.log"

    def save(self) -> None:
        """`State::save` after every change: `state.json.partial` then rename."""
        text = encode_state(self.state)
        write_state_file(self.pueue_dir, text, self.settings.compress_state_file)

    def clean_log(self, task_id: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.log_path(task_id).unlink()

    # ------------------------------------------------------------------ start-up

    def setup(self) -> None:
        (self.pueue_dir / "task_logs").mkdir(parents=True, exist_ok=True)
        secret_path = self.settings.shared_secret_path()
        if not secret_path.exists():
            alphabet = string.ascii_letters + string.digits
            secret_path.parent.mkdir(parents=True, exist_ok=True)
            secret_path.write_text("".join(secrets.choice(alphabet) for _ in range(512)))
            os.chmod(secret_path, 0o600)
        self.secret = secret_path.read_text()
        self.create_pid_file()
        self.restore_state()
        gc.collect()
        gc.freeze()  # a restored 76 MB state is millions of long-lived objects: keep them out of GC
        self.save()
        self.listener = self.bind_socket()

    def create_pid_file(self) -> None:
        """`pid::create_pid_file` (pueue/src/daemon/pid.rs), wrapped in "Failed to create pid file."."""
        pid_path = self.settings.pid_path()
        outer = "Failed to create pid file."
        if pid_path.exists():
            try:
                pid = int(pid_path.read_text().strip())
            except ValueError as err:
                chain = [outer, f"Failed to parse PID from file: {rust_debug_path(pid_path)}"]
                raise StartupError(chain, "pueue/src/daemon/pid.rs:22") from err
            if process_exists(pid) and pid != os.getpid():
                message = (
                    "Pid file already exists and another daemon seems to be running.\n"
                    "Please stop the daemon beforehand or delete the file manually: "
                    + rust_debug_path(pid_path)
                )
                raise StartupError([outer, message], "pueue/src/daemon/pid.rs:25")
        try:
            pid_path.write_text(str(os.getpid()))
        except OSError as err:
            path = rust_debug_path(pid_path)
            message = f"I/O error at path {path} while creating pid file:\n{io_error_text(err)}"
            raise StartupError([outer, message], "pueue/src/daemon/pid.rs:42") from err

    def restore_state(self) -> None:
        path = state_path(self.pueue_dir, self.settings.compress_state_file)
        if not path.exists():
            return
        try:
            state = decode_state(read_state_file(path), self.flavor)
        except (StateError, ValueError, OSError) as err:
            print(f"WARN Failed to restore previous state:\n {err}", file=sys.stderr)
            print("WARN Using clean state instead.", file=sys.stderr)
            return
        now = now_ns()
        for task in state["tasks"].values():
            task["envs"] = self.shuffled(task["envs"])  # a new HashMap: new iteration order
            self.model.restore(task, now)
            if task["group"] not in state["groups"]:
                task["group"] = DEFAULT_GROUP
                state["groups"].setdefault(DEFAULT_GROUP, new_group())
            if status_name(task["status"]) == "Queued":
                state["groups"][task["group"]]["status"] = "Paused"
        state["groups"].setdefault(DEFAULT_GROUP, new_group())
        self.state = state

    def bind_socket(self) -> socket.socket:
        path = self.settings.socket_path()
        if path.exists() or path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()
            else:
                raise StartupError(
                    [
                        "There seems to be an active pueue daemon.\n"
                        "If you're sure there isn't, please remove the socket inside the pueue_directory "
                        "manually."
                    ],
                    "pueue/src/daemon/network/socket/unix.rs:35",
                )
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(64)
        listener.settimeout(TICK)
        return listener

    def shuffled(self, envs: dict[str, str]) -> dict[str, str]:
        keys = list(envs)
        self.rng.shuffle(keys)
        return {k: envs[k] for k in keys}

    # ------------------------------------------------------------------ main loops

    def serve(self) -> int:
        assert self.listener is not None
        scheduler = threading.Thread(target=self.scheduler_loop, name="scheduler", daemon=True)
        scheduler.start()
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                raise
            conn.settimeout(None)
            threading.Thread(target=self.handle_connection, args=(conn,), daemon=True).start()
        scheduler.join(timeout=5)
        self.shutdown()
        return 0

    def scheduler_loop(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                self.tick()
            time.sleep(TICK)

    def shutdown(self) -> None:
        with self.lock:
            for task_id in list(self.children):
                self.signal_task(task_id, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while self.children and time.monotonic() < deadline:
                self.reap()
                time.sleep(0.02)
            self.save()
        if self.listener is not None:
            self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.settings.socket_path().unlink()
        with contextlib.suppress(FileNotFoundError):
            self.settings.pid_path().unlink()

    # ------------------------------------------------------------------ the task handler

    def tick(self) -> None:
        """One pass of pueued's task handler, saving where it saves, in its order.

        Finished tasks, delayed tasks enqueued and spawns each save at once; DependencyFailed marking
        and the end of a v4 group reset change the state without saving it (task_handler.rs and
        process_handler/ in 4.0.4, task_handler/ in 3.4.1). So after a kill the file holds the
        killed task, and its dependants still Queued."""
        if self.reap():
            self.save()  # handle_finished_tasks
        if self.finish_resets() and self.flavor == "v3":
            self.save()  # 3.x `reset_state` saves (state_helper.rs)
        changed = False
        now = now_ns()
        tasks = self.state["tasks"]
        queued = []  # one pass over the tasks per tick: a 53,000-task state stays cheap
        for task in tasks.values():
            status = task["status"]
            name = status if isinstance(status, str) else next(iter(status))
            if name == "Stashed":
                enqueue_at = status["Stashed"]["enqueue_at"]
                if enqueue_at is not None and enqueue_at <= now:
                    self.model.set_queued(task, now_ns())
                    changed = True
                    queued.append(task)
            elif name == "Queued":
                queued.append(task)
        if changed:
            self.save()  # enqueue_delayed_tasks
        groups = self.state["groups"]
        for task in queued:
            if status_name(task["status"]) != "Queued" or not task["dependencies"]:
                continue
            # Left alone in a paused group, so that a dependency can be fixed and restarted in place.
            if groups.get(task["group"], {}).get("status") == "Paused":
                continue
            for dep in task["dependencies"]:
                dep_task = tasks.get(dep)
                result = task_result(dep_task) if dep_task else None
                if result is not None and result != "Success":
                    self.model.set_done(task, "DependencyFailed", now_ns(), end=now_ns())
                    break  # no save: pueued does not save after this
        if not self.full_reset:
            while (task_id := self.next_task_id(queued)) is not None:
                self.spawn(task_id)
                self.save()  # spawn_process saves after each start (or failure to spawn)

    def reap(self) -> bool:
        changed = False
        for task_id, child in list(self.children.items()):
            code = child.process.poll()
            if code is None:
                continue
            del self.children[task_id]
            child.log.close()
            if child.process.stdin:
                child.process.stdin.close()
            task = self.state["tasks"].get(task_id)
            if task is None:
                continue
            result: Any = "Success" if code == 0 else {"Failed": code} if code > 0 else "Killed"
            self.model.set_done(task, result, now_ns())
            changed = True
        return changed

    def next_task_id(self, queued: list[Task] | None = None) -> int | None:
        """`get_next_task_id`: Queued, group Running with a free slot, dependencies succeeded;
        the highest priority wins, then the lowest id."""
        tasks = self.state["tasks"]
        candidates = []
        for task in tasks.values() if queued is None else queued:
            if status_name(task["status"]) != "Queued":
                continue
            group = self.state["groups"].get(task["group"])
            if group is None or group["status"] != "Running":
                continue
            running = sum(1 for c in self.children.values() if c.group == task["group"])
            if group["parallel_tasks"] and running >= group["parallel_tasks"]:
                continue
            deps = [tasks[d] for d in task["dependencies"] if d in tasks]
            if not all(task_result(d) == "Success" for d in deps):
                continue
            candidates.append(task)
        if not candidates:
            return None
        return min(candidates, key=lambda t: (-t["priority"], t["id"]))["id"]

    def spawn(self, task_id: int) -> None:
        task = self.state["tasks"][task_id]
        group = task["group"]
        used = {c.worker_id for c in self.children.values() if c.group == group}
        worker_id = next(i for i in range(len(used) + 1) if i not in used)
        envs = dict(task["envs"])
        for key, value in (("PUEUE_GROUP", group), ("PUEUE_WORKER_ID", str(worker_id))):
            if key not in envs:  # a HashMap insert lands anywhere in the iteration order
                items = list(envs.items())
                items.insert(self.rng.randrange(len(items) + 1), (key, value))
                envs = dict(items)
            envs[key] = value
        log = open(self.log_path(task_id), "wb")  # noqa: SIM115 - kept open while the task runs
        try:
            process = subprocess.Popen(
                ["sh", "-c", task["command"]],
                cwd=task["path"],
                env=envs,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        except (OSError, ValueError) as err:
            # Python refuses a NUL (in the group name that PUEUE_GROUP carries, say) with ValueError; Rust's
            # Command::spawn returns io::const_error!(InvalidInput, "nul byte found in provided data").
            debug = (
                rust_os_error_debug(err)
                if isinstance(err, OSError)
                else 'Error { kind: InvalidInput, message: "nul byte found in provided data" }'
            )
            message = f"Failed to spawn child {task_id} with err: {debug}"
            log.write(f"Pueue error, failed to spawn task. Check your command.\n{message}".encode())
            log.close()
            self.model.set_done(task, {"FailedToSpawn": message}, now_ns(), end=now_ns())
            return
        self.children[task_id] = Child(process, group, worker_id, log)
        self.model.set_running(task, now_ns())
        task["envs"] = envs

    def signal_task(self, task_id: int, sig: int) -> None:
        child = self.children.get(task_id)
        if child is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.process.pid, sig)
        if sig == signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGCONT)

    def finish_resets(self) -> bool:
        """v4: a group in status Reset loses its tasks once its children are gone, then runs again.
        v3: once every child is gone the whole state is backed up to `log/` and cleared."""
        changed = False
        if self.flavor == "v3":
            if self.full_reset and not self.children:
                self.backup_state()
                for task_id in list(self.state["tasks"]):
                    self.clean_log(task_id)
                self.state["tasks"].clear()
                for group in self.state["groups"].values():
                    group["status"] = "Running"
                self.full_reset = False
                changed = True
            return changed
        for name, group in self.state["groups"].items():
            if group["status"] != "Reset" or any(c.group == name for c in self.children.values()):
                continue
            for task_id in [i for i, t in self.state["tasks"].items() if t["group"] == name]:
                del self.state["tasks"][task_id]
                self.clean_log(task_id)
            group["status"] = "Running"
            changed = True
        return changed

    def backup_state(self) -> None:
        """v3 `State::backup`: `log/<UTC time>_state.json`, keep the 10 newest."""
        log_dir = self.pueue_dir / "log"
        log_dir.mkdir(exist_ok=True)
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.gmtime())
        (log_dir / f"{stamp}_state.json").write_text(encode_state(self.state))
        backups = sorted(log_dir.glob("*_state.json"))
        for old in backups[:-10]:
            old.unlink()

    # ------------------------------------------------------------------ connections

    def handle_connection(self, sock: socket.socket) -> None:
        conn = Connection(sock)
        try:
            hello = conn.receive()
            if not isinstance(hello, dict) or hello.get("secret") != self.secret:
                return  # pueue drops the connection on a wrong secret
            conn.send({"version": self.version})
            while (request := conn.receive()) is not None:
                try:
                    answer = self.handle(request)
                except Exception as err:  # a simulator bug: say so instead of hanging up
                    traceback.print_exc()
                    answer = Connection.encode(failure(f"pueue simulator error: {err!r}"))
                conn.send_raw(answer)
                if request.get("cmd") == "shutdown":
                    self.stopping.set()
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def handle(self, request: dict[str, Any]) -> bytes:
        """Run one request under the state lock and encode the answer while still holding it."""
        handler = HANDLERS.get(request.get("cmd", ""))
        with self.lock:
            if handler is None:
                return Connection.encode(failure(f"Unknown request {request.get('cmd')!r}"))
            return Connection.encode(handler(self, request))


def _name_process(name: str) -> None:
    """Call this process ``name`` in /proc/PID/comm, as the real binary is called: a watcher checks that the
    pid in ``pueue.pid`` is a live ``pueued``, not any process (pids are reused)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME


def run(flavor: str, version: str, argv: list[str]) -> int:
    """Entry point of the simulated `pueued`."""
    import argparse

    parser = argparse.ArgumentParser(prog="pueued", description="Start the Pueue daemon")
    parser.add_argument("-V", "--version", action="version", version=f"pueued {version}")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-d", "--daemonize", action="store_true")
    parser.add_argument("-c", "--config")
    parser.add_argument("-p", "--profile")
    args = parser.parse_args(argv)
    _name_process("pueued")

    if args.daemonize:
        # `pueued -d` starts a detached copy of itself without `-d` and returns at once.
        command = [a for a in sys.orig_argv if a not in ("-d", "--daemonize")]
        subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return 0

    try:
        settings, found = read_settings(args.config, flavor)
    except ConfigError as err:
        sys.stderr.write(errors.render(flavor, err.chain, "pueue/src/daemon/mod.rs:52"))
        return 1
    if not found:
        save_default_config(settings, args.config, flavor)

    daemon = Daemon(flavor, version, settings)
    try:
        daemon.setup()
    except StartupError as err:
        sys.stderr.write(errors.render(flavor, err.chain, err.location))
        return 1

    def stop(_signum: int, _frame: Any) -> None:
        daemon.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return daemon.serve()
