"""Real ``pueued`` daemons (the upstream 4.0.4 and 3.4.1 binaries), each in its own temporary HOME.

Where the binaries come from, in order: ``$PUEUE_BIN_DIR``, ``../shared/pueue/bin`` beside the checkout,
then ``PATH`` (``pueue``/``pueued`` of a known version). A directory may hold versioned names
(``pueue-4.0.4``) or plain ones. Under ``CI=true`` a missing version fails the test; elsewhere the test is
skipped and the session's summary says plainly that the real-pueue tier did not run.

Two layouts, as pueue decides them (``shared.runtime_directory``, else ``$XDG_RUNTIME_DIR``, else the pueue
directory):

- ``runtime``: ``XDG_RUNTIME_DIR`` is set (a systemd user service, or ``pueued -d`` from an SSH login with
  pam_systemd): ``pueue.pid`` and the socket live there, not beside ``state.json``;
- ``plain``: no ``XDG_RUNTIME_DIR``: everything lives in ``~/.local/share/pueue``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness.services import IN_CI, terminate

REPO = Path(__file__).resolve().parents[2]
VERSIONS = ("4.0.4", "3.4.1")
LAYOUTS = ("runtime", "plain")
SHARED_BIN = REPO.parent / "shared" / "pueue" / "bin"

# What the test session learned about the tier, for its closing summary (conftest.py).
NOT_RUN: set[str] = set()


@dataclass(frozen=True)
class PueueBinaries:
    version: str
    pueue: Path
    pueued: Path


def _version_of(binary: Path) -> str | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    match = re.search(r"(\d+\.\d+\.\d+)", out.stdout)
    return match.group(1) if match else None


def _search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("PUEUE_BIN_DIR"):
        dirs.append(Path(os.environ["PUEUE_BIN_DIR"]))
    dirs.append(SHARED_BIN)
    return dirs


def find_binaries() -> dict[str, PueueBinaries]:
    """Every known version found, by version."""
    found: dict[str, PueueBinaries] = {}
    for directory in _search_dirs():
        for version in VERSIONS:
            client, daemon = directory / f"pueue-{version}", directory / f"pueued-{version}"
            if version not in found and client.is_file() and daemon.is_file():
                found[version] = PueueBinaries(version, client, daemon)
        client, daemon = directory / "pueue", directory / "pueued"
        if client.is_file() and daemon.is_file() and (v := _version_of(client)) in VERSIONS:
            found.setdefault(v, PueueBinaries(v, client, daemon))
    client_path, daemon_path = shutil.which("pueue"), shutil.which("pueued")
    if client_path and daemon_path and (v := _version_of(Path(client_path))) in VERSIONS:
        found.setdefault(v, PueueBinaries(v, Path(client_path), Path(daemon_path)))
    return found


_FOUND: dict[str, PueueBinaries] | None = None


def require_pueue(version: str) -> PueueBinaries:
    """The binaries of ``version``: a failure under CI=true when missing, else a skip that is reported."""
    global _FOUND
    if _FOUND is None:
        _FOUND = find_binaries()
    if version in _FOUND:
        return _FOUND[version]
    where = ", ".join([*(str(d) for d in _search_dirs()), "PATH"])
    message = f"real pueue {version} not found (looked in {where}); the real-pueue tier did not run"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    NOT_RUN.add(message)
    pytest.skip(message)
    raise AssertionError("unreachable")


@dataclass
class RealPueue:
    """One real pueue "host": a HOME, an optional runtime directory, a daemon, and its client."""

    root: Path
    bins: PueueBinaries
    layout: str = "runtime"  # "runtime" ($XDG_RUNTIME_DIR set) or "plain"
    config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # extra pueue.yml sections
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _home: Path = field(init=False)

    def __post_init__(self) -> None:
        # The plain layout puts the socket in ~/.local/share/pueue, and a Unix socket's path must fit in 108
        # bytes: pytest's temporary directories are too deep for that, so such a HOME moves to a short one.
        self._home = self.root / "home"
        if len(str(self._home / ".local/share/pueue/pueue_user.socket")) > 100:
            self._home = Path(tempfile.mkdtemp(prefix="pueue-home-"))
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "home").symlink_to(self._home)
        self.home.mkdir(parents=True, exist_ok=True)
        if self.layout == "runtime":
            self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.config:
            self.write_config(self.config)

    @property
    def version(self) -> str:
        return self.bins.version

    @property
    def home(self) -> Path:
        return self._home

    @property
    def runtime_dir(self) -> Path:
        return self.root / "run"

    @property
    def pueue_dir(self) -> Path:
        return self.home / ".local" / "share" / "pueue"

    @property
    def pid_file(self) -> Path:
        return (self.runtime_dir if self.layout == "runtime" else self.pueue_dir) / "pueue.pid"

    @property
    def state_file(self) -> Path:
        return self.pueue_dir / "state.json"

    @property
    def config_file(self) -> Path:
        return self.home / ".config" / "pueue" / "pueue.yml"

    @property
    def env(self) -> dict[str, str]:
        """The environment of this host's logins: what pueue and the poll script see."""
        env = {
            "HOME": str(self.home),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "USER": os.environ.get("USER", "root"),
        }
        if self.layout == "runtime":
            env["XDG_RUNTIME_DIR"] = str(self.runtime_dir)
        return env

    def write_config(self, sections: Mapping[str, Mapping[str, Any]]) -> None:
        """A pueue.yml with these sections (JSON is YAML); pueue fills in every other key with its default."""
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps({k: dict(v) for k, v in sections.items()}, indent=2) + "\n")

    # The daemon

    def start(self, timeout: float = 20.0) -> RealPueue:
        with (self.root / "pueued.log").open("ab") as log:  # pueued keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [self.bins.pueued], env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pueued {self.version} exited: {(self.root / 'pueued.log').read_text()}")
            if self.pid_file.exists() and self.pueue("status", "--json", check=False).returncode == 0:
                return self
            if time.monotonic() > deadline:
                raise TimeoutError(f"pueued {self.version} did not answer within {timeout}s")
            time.sleep(0.05)

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None

    def remove(self) -> None:
        """Stop the daemon and remove a HOME that lives outside ``root``."""
        self.stop()
        if self._home != self.root / "home":
            shutil.rmtree(self._home, ignore_errors=True)

    def crash(self) -> None:
        """SIGKILL the daemon: its pid file stays behind."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    # The client

    def pueue(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.bins.pueue, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(f"pueue {' '.join(args)}: exit {done.returncode}: {done.stderr}{done.stdout}")
        return done

    def add(self, command: str, *, group: str = "default", after: list[int] = (), label: str | None = None,  # type: ignore[assignment]
            stashed: bool = False) -> int:  # fmt: skip
        args = ["add", f"--group={group}"]
        for task in after:
            args += ["--after", str(task)]
        if label is not None:
            args += ["--label", label]
        if stashed:
            args.append("--stashed")
        out = self.pueue(*args, "--", command).stdout
        match = re.search(r"id (\d+)", out)
        assert match, out
        return int(match.group(1))

    def group_add(self, name: str, parallel: int = 1) -> None:
        """``pueue group add``, then wait until the daemon lists the group: pueued 3.4.1 answers "Group added"
        before its task handler has created it, and an ``add --group`` right after can still be refused with
        "Group … doesn't exists" (seen once in CI)."""
        self.pueue("group", "add", name, "--parallel", str(parallel))
        self.wait_for(lambda document: name in document["groups"], what=f"group {name} listed")

    def status(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.pueue("status", "--json").stdout)
        return document

    def task_state(self, task: int, document: Mapping[str, Any] | None = None) -> str:
        """Queued, Running, …, or for Done tasks the result: Success, Failed, Killed, DependencyFailed, …"""
        status = (document or self.status())["tasks"][str(task)]["status"]
        name = status if isinstance(status, str) else next(iter(status))
        if name != "Done":
            return str(name)
        result = status["Done"]
        result = result["result"] if isinstance(result, dict) and "result" in result else result
        return str(result if isinstance(result, str) else next(iter(result)))

    def wait_for(self, predicate: Any, timeout: float = 30.0, what: str = "the condition") -> dict[str, Any]:
        """Poll ``pueue status`` until ``predicate(document)`` holds; the document."""
        deadline = time.monotonic() + timeout
        while True:
            document = self.status()
            if predicate(document):
                return document
            if time.monotonic() > deadline:
                raise TimeoutError(f"pueue {self.version}: {what} not reached in {timeout}s")
            time.sleep(0.1)

    def file_state(self) -> dict[str, Any]:
        """What state.json says now (which may lag the daemon: see tests/fixtures/pueue/README.md)."""
        document: dict[str, Any] = json.loads(self.state_file.read_bytes())
        return document


@contextlib.contextmanager
def real_pueue(root: Path, version: str, layout: str = "runtime", **kwargs: Any) -> Iterator[RealPueue]:
    host = RealPueue(root, require_pueue(version), layout, **kwargs)
    try:
        yield host.start()
    finally:
        host.remove()
