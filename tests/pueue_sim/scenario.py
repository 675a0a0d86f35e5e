"""The simulator's API for tests.

* `install(bin_dir, flavor)` writes `pueue` and `pueued` shell wrappers.
* `write_config(config_path, pueue_directory, compress=False)` writes a `pueue.yml`.
* `SimHost` bundles one simulated host: a temp root with config, pueue directory, wrappers and an
  environment (`PUEUE_CONFIG_PATH`, `TZ`), a daemon you can start, stop, crash and restart, the
  client, and gate tasks that finish when the test says so.
* `generate_state(...)` writes a large realistic state file (see `generate.py`).
* `set_status(...)`, `set_group(...)` edit a state file while the daemon is stopped, the way the
  daemon itself would have written it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zoneinfo
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from .config import username
from .generate import DEFAULT_STATUSES, generate_state
from .state import (
    MODELS,
    VERSIONS,
    decode_state,
    encode_state,
    read_state_file,
    status_name,
    task_result,
    write_state_file,
)
from .timefmt import Zone, now_ns

PACKAGE_DIR = Path(__file__).resolve().parent
T = TypeVar("T")

__all__ = [
    "DEFAULT_STATUSES",
    "SimHost",
    "generate_state",
    "install",
    "load_state",
    "set_group",
    "set_status",
    "write_config",
]


def install(bin_dir: Path, flavor: str, version: str | None = None) -> tuple[Path, Path]:
    """Write executable `bin_dir/pueue` and `bin_dir/pueued` for pueue `flavor` ("v3" or "v4").

    Each wrapper is `exec <sys.executable> -I -S <this package>/__main__.py <flavor> <role>
    <version> lc-set|lc-unset "$@"`: absolute paths, isolated mode, so the caller's cwd and
    PYTHONPATH do not matter (the lc flag says whether LC_CTYPE was in the caller's environment).
    `version` defaults to 3.4.1 / 4.0.0 and is what `--version` prints and the handshake reports.
    """
    if flavor not in VERSIONS:
        raise ValueError(f"unknown flavor {flavor!r}")
    version = version or VERSIONS[flavor]
    bin_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, role in (("pueue", "client"), ("pueued", "daemon")):
        path = bin_dir / name
        command = " ".join(
            shlex.quote(part)
            for part in (sys.executable, "-I", "-S", str(PACKAGE_DIR / "__main__.py"), flavor, role, version)
        )
        # Python's C-locale coercion would add LC_CTYPE to the environment that `pueue add` records;
        # tell the launcher whether it was set, so that it can undo that.
        path.write_text(
            f"#!/bin/sh\n# pueue simulator: {name} {version} ({flavor})\n"
            'if [ -z "${LC_CTYPE+x}" ]; then lc=lc-unset; else lc=lc-set; fi\n'
            f'exec {command} "$lc" "$@"\n'
        )
        path.chmod(0o755)
        paths.append(path)
    return paths[0], paths[1]


def write_config(
    config_path: Path,
    pueue_directory: Path,
    compress: bool = False,
    *,
    runtime_directory: Path | None = None,
    alias_file: Path | None = None,
) -> None:
    """A `pueue.yml` with `shared.pueue_directory` (and `daemon.compress_state_file`, read by v4)."""
    lines = [
        "daemon:",
        f"  compress_state_file: {'true' if compress else 'false'}",
        "shared:",
        f"  pueue_directory: {pueue_directory}",
    ]
    if runtime_directory is not None:
        lines.append(f"  runtime_directory: {runtime_directory}")
    if alias_file is not None:
        lines.append(f"  alias_file: {alias_file}")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------ state files


def _state_file(pueue_dir: Path, compress: bool | None) -> Path:
    if compress is None:
        gz = pueue_dir / "state.json.gz"
        return gz if gz.exists() and not (pueue_dir / "state.json").exists() else pueue_dir / "state.json"
    return pueue_dir / ("state.json.gz" if compress else "state.json")


def load_state(pueue_dir: Path, compress: bool | None = None) -> dict[str, Any]:
    """The parsed state file (JSON, timestamps as strings)."""
    return read_state_file(_state_file(pueue_dir, compress))


def _detect_flavor(raw: dict[str, Any]) -> str:
    for task in raw["tasks"].values():
        return "v3" if "prev_status" in task else "v4"
    return "v4" if any(g["status"] == "Reset" for g in raw["groups"].values()) else "v3"


def _rewrite(
    pueue_dir: Path,
    edit: Callable[[dict[str, Any], str], None],
    flavor: str | None,
    compress: bool | None,
    zone: Zone,
) -> None:
    path = _state_file(pueue_dir, compress)
    raw = read_state_file(path)
    flavor = flavor or _detect_flavor(raw)
    state = decode_state(raw, flavor)
    edit(state, flavor)
    write_state_file(pueue_dir, encode_state(state, zone), path.suffix == ".gz")


def set_status(
    pueue_dir: Path,
    task_id: int,
    status: str,
    result: Any = None,
    *,
    flavor: str | None = None,
    compress: bool | None = None,
    zone: Zone = None,
    enqueue_at: int | None = None,
) -> None:
    """Move a task to `status` in the state file (daemon stopped), with fresh timestamps.

    `status` is Queued, Stashed, Running, Paused, Done or Locked; for Done, `result` is "Success",
    "Killed", "Errored", "DependencyFailed", an exit code (int -> Failed(n)), `{"Failed": n}` or
    `{"FailedToSpawn": msg}` (a plain "FailedToSpawn" gets pueue's usual message). `zone` is the
    daemon's time zone for the rewritten file (default: this process's).
    """
    if status == "Done":
        if result is None:
            result = "Success"
        elif isinstance(result, int):
            result = {"Failed": result}
        elif result == "FailedToSpawn":
            result = {
                "FailedToSpawn": f"Failed to spawn child {task_id} with err: "
                'Os { code: 2, kind: NotFound, message: "No such file or directory" }'
            }

    def edit(state: dict[str, Any], flavor: str) -> None:
        model = MODELS[flavor]
        task = state["tasks"][task_id]
        if status_name(task["status"]) == "Locked":
            model.unlock(task)
        current = status_name(task["status"])
        now = now_ns()
        if status == "Queued":
            model.set_queued(task, now)
        elif status == "Stashed":
            model.set_stashed(task, enqueue_at)
        elif status in ("Running", "Paused"):
            if current not in ("Running", "Paused"):
                if current == "Done":
                    model.set_queued(task, now)
                model.set_running(task, now_ns())
            model.set_paused(task, status == "Paused")
        elif status == "Done":
            if current == "Done":
                model.set_queued(task, now)
            spawn_failed = isinstance(result, dict) and "FailedToSpawn" in result
            never_ran = result == "DependencyFailed" or spawn_failed
            if not never_ran:
                model.set_running(task, now_ns())
            model.set_done(task, result, now_ns())
        elif status == "Locked":
            if current not in ("Queued", "Stashed"):
                model.set_queued(task, now)
            model.lock(task)
        else:
            raise ValueError(f"unknown status {status!r}")

    _rewrite(pueue_dir, edit, flavor, compress, zone)


def set_group(
    pueue_dir: Path,
    name: str,
    status: str | None = None,
    parallel_tasks: int | None = None,
    *,
    flavor: str | None = None,
    compress: bool | None = None,
    zone: Zone = None,
) -> None:
    """Create or change a group in the state file (daemon stopped)."""

    def edit(state: dict[str, Any], _flavor: str) -> None:
        group = state["groups"].setdefault(name, {"status": "Running", "parallel_tasks": 1})
        if status is not None:
            group["status"] = status
        if parallel_tasks is not None:
            group["parallel_tasks"] = parallel_tasks

    _rewrite(pueue_dir, edit, flavor, compress, zone)


# ------------------------------------------------------------------------------------ SimHost


def _children_of(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return children


class SimHost:
    """One simulated host with its own pueue installation.

    Layout under `root`: `bin/pueue`, `bin/pueued`, `config/pueue.yml`, `pueue/` (the
    pueue_directory), `gate/` (files that release gate tasks), `work/` (the default cwd of tasks),
    `pueued.log` (the daemon's stderr). `env` is the environment the client and daemon run with:
    this process's environment without PUEUE_*/XDG_*/RUST_BACKTRACE variables, plus
    `PUEUE_CONFIG_PATH`, `TZ` and, when `fast_wait`, `PUEUED_TEST_ENV_VARIABLE` (pueue's own switch
    that makes `pueue wait` poll every 250 ms instead of 2 s).
    """

    def __init__(
        self,
        root: Path | None = None,
        flavor: str = "v4",
        *,
        tz: str = "Europe/Berlin",
        compress: bool = False,
        fast_wait: bool = False,
        version: str | None = None,
    ) -> None:
        self._own_root = root is None  # a root we made ourselves is removed again by close()
        self.root = Path(tempfile.mkdtemp(prefix="pueuesim-")) if root is None else Path(root)
        self.flavor = flavor
        self.tz = tz
        self.compress = compress
        self.bin_dir = self.root / "bin"
        self.config_path = self.root / "config" / "pueue.yml"
        self.pueue_dir = self.root / "pueue"
        self.gate_dir = self.root / "gate"
        self.work_dir = self.root / "work"
        for directory in (self.pueue_dir, self.gate_dir, self.work_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.pueue_bin, self.pueued_bin = install(self.bin_dir, flavor, version)
        # Unix socket paths are limited to 107 bytes; deep temp dirs get a short runtime directory.
        self._runtime_dir: Path | None = None
        if len(str(self.pueue_dir / f"pueue_{username()}.socket")) > 100:
            self._runtime_dir = Path(tempfile.mkdtemp(prefix="psim-", dir="/tmp"))
        self.alias_file = self.root / "config" / "pueue_aliases.yml"
        write_config(
            self.config_path,
            self.pueue_dir,
            compress,
            runtime_directory=self._runtime_dir,
            alias_file=self.alias_file,
        )
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PUEUE", "XDG_")) and k != "RUST_BACKTRACE"
        }
        self.env.update({"PUEUE_CONFIG_PATH": str(self.config_path), "TZ": tz})
        if fast_wait:
            self.env["PUEUED_TEST_ENV_VARIABLE"] = "true"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.orphans: list[int] = []

    # -------------------------------------------------------------- context manager / cleanup

    def __enter__(self) -> SimHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the daemon, kill tasks orphaned by `kill_daemon`, remove the private runtime dir
        (and the root, when SimHost created it)."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.stop_daemon()
        self.daemon = None
        for pgid in self.orphans:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self.orphans.clear()
        if self._runtime_dir is not None:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # -------------------------------------------------------------- paths

    @property
    def socket_path(self) -> Path:
        return (self._runtime_dir or self.pueue_dir) / f"pueue_{username()}.socket"

    @property
    def pid_path(self) -> Path:
        """In the runtime directory, like the socket (XDG_RUNTIME_DIR is not passed on: see `env`)."""
        return (self._runtime_dir or self.pueue_dir) / "pueue.pid"

    @property
    def state_path(self) -> Path:
        return self.pueue_dir / ("state.json.gz" if self.compress and self.flavor == "v4" else "state.json")

    def log_path(self, task_id: int) -> Path:
        return self.pueue_dir / "task_logs" / f"{task_id}.log"

    def set_aliases(self, aliases: dict[str, str]) -> None:
        """Write `pueue_aliases.yml` (read by the daemon on every `add`)."""
        self.alias_file.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in aliases.items()))

    # -------------------------------------------------------------- daemon

    def start_daemon(self, timeout: float = 30.0, check: bool = True) -> subprocess.Popen[bytes]:
        """Start `pueued` and wait until its socket accepts connections (or it exits)."""
        with open(self.root / "pueued.log", "ab") as log:
            self.daemon = subprocess.Popen(
                [str(self.pueued_bin)],
                env=self.env,
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                if check:
                    raise RuntimeError(f"pueued exited with {self.daemon.returncode}:\n{self.daemon_log()}")
                return self.daemon
            if self._socket_alive():
                return self.daemon
            time.sleep(0.02)
        raise TimeoutError(f"pueued did not come up:\n{self.daemon_log()}")

    def _socket_alive(self) -> bool:
        import socket

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            return False
        finally:
            sock.close()
        return self.pid_path.exists()

    def daemon_log(self) -> str:
        path = self.root / "pueued.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_daemon(self, timeout: float = 60.0) -> int:
        """SIGTERM: the daemon kills its tasks, saves, removes socket and pid file, exits 0. Saving a 50 MB
        state takes the simulator seconds on a loaded 2-core machine: hence the generous bound."""
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGTERM)
        code = self.daemon.wait(timeout)
        self.daemon = None
        return code

    def kill_daemon(self) -> None:
        """SIGKILL, like a crash: pid file and socket stay behind, running tasks keep running
        (they are killed in `close()`), the state file keeps them as Running."""
        assert self.daemon is not None
        self.orphans.extend(_children_of(self.daemon.pid))
        self.daemon.kill()
        self.daemon.wait()
        self.daemon = None

    def restart_daemon(self) -> subprocess.Popen[bytes]:
        if self.daemon is not None:
            self.stop_daemon()
        return self.start_daemon()

    # -------------------------------------------------------------- client

    def pueue(
        self,
        *args: str,
        env: dict[str, str | None] | None = None,
        cwd: Path | None = None,
        timeout: float = 30.0,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run the client; `env` entries are added to (or, with value None, removed from) `self.env`."""
        run_env = dict(self.env)
        for key, value in (env or {}).items():
            if value is None:
                run_env.pop(key, None)
            else:
                run_env[key] = value
        return subprocess.run(
            [str(self.pueue_bin), *args],
            env=run_env,
            cwd=cwd or self.work_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def status(self, *args: str, **kwargs: Any) -> dict[str, Any]:
        """`pueue status --json` parsed."""
        result = self.pueue("status", "--json", *args, check=True, **kwargs)
        return json.loads(result.stdout)

    def add(
        self,
        command: str,
        group: str | None = None,
        label: str | None = None,
        *,
        after: Iterable[int] = (),
        stashed: bool = False,
        delay: str | None = None,
        priority: int | None = None,
        cwd: Path | None = None,
        env: dict[str, str | None] | None = None,
    ) -> int:
        """`pueue add --print-task-id ...`; returns the new id."""
        args = ["add", "--print-task-id"]
        if group is not None:
            args += ["-g", group]
        if label is not None:
            args += ["-l", label]
        after = list(after)
        if after:
            args += ["-a", *map(str, after)]
        if stashed:
            args.append("-s")
        if delay is not None:
            args += ["-d", delay]
        if priority is not None:
            args += ["-o", str(priority)]
        result = self.pueue(*args, "--", command, cwd=cwd, env=env, check=True)
        return int(result.stdout.strip())

    # -------------------------------------------------------------- gate tasks

    def gate_command(self, name: str) -> str:
        """A shell command that waits until `finish(name)` and then exits with the given code."""
        gate = shlex.quote(str(self.gate_dir / name))
        return f"while [ ! -e {gate} ]; do sleep 0.05; done; exit $(cat {gate})"

    def add_gated(self, name: str, **kwargs: Any) -> int:
        return self.add(self.gate_command(name), **kwargs)

    def finish(self, name: str, exit_code: int = 0) -> None:
        """Release the gate task(s) waiting for `name`."""
        temp = self.gate_dir / f".{name}.tmp"
        temp.write_text(str(exit_code))
        os.replace(temp, self.gate_dir / name)

    # -------------------------------------------------------------- observing

    def state(self) -> dict[str, Any]:
        """The parsed state file as the daemon last wrote it."""
        return read_state_file(self.state_path)

    def task(self, task_id: int, source: str = "state") -> dict[str, Any] | None:
        data = self.state() if source == "state" else self.status()
        return data["tasks"].get(str(task_id))

    def wait_until(self, predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
        """Call `predicate` until it returns something truthy; return that, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
                value = predicate()
                if value:
                    return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            time.sleep(interval)

    def wait_for_status(
        self, task_id: int, status: str, timeout: float = 10.0, source: str = "state"
    ) -> dict[str, Any]:
        """Wait until the state file (or, with `source="status"`, the daemon) shows the task with this
        status name (Done, Running, ...). A change pueued does not save (DependencyFailed, stash,
        enqueue, restart --in-place) reaches the file only with the next save: wait on "status"."""

        def check() -> dict[str, Any] | None:
            task = self.task(task_id, source)
            return task if task is not None and status_name(task["status"]) == status else None

        return self.wait_until(check, timeout)

    @staticmethod
    def result(task: dict[str, Any]) -> Any:
        return task_result(task)

    def set_status(self, task_id: int, status: str, result: Any = None, **kwargs: Any) -> None:
        """`set_status` on this host's state file (stop the daemon first), in the host's zone."""
        assert self.daemon is None, "stop the daemon before editing its state file"
        set_status(
            self.pueue_dir,
            task_id,
            status,
            result,
            flavor=self.flavor,
            compress=self.compress and self.flavor == "v4",
            zone=zoneinfo.ZoneInfo(self.tz),
            **kwargs,
        )

    def set_group(self, name: str, status: str | None = None, parallel_tasks: int | None = None) -> None:
        assert self.daemon is None, "stop the daemon before editing its state file"
        set_group(
            self.pueue_dir,
            name,
            status,
            parallel_tasks,
            flavor=self.flavor,
            compress=self.compress and self.flavor == "v4",
            zone=zoneinfo.ZoneInfo(self.tz),
        )
