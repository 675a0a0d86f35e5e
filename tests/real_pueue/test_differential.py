"""The simulator against the real thing: one scripted scenario, step by step, on real pueued and on
tests/pueue_sim, for 4.0.4 ↔ sim v4 and 3.4.1 ↔ sim v3, with and without ``$XDG_RUNTIME_DIR``.

Both run through the same harness (``RealPueue``), in the same layout and environment; only the binaries
differ. After each step the test records ``status --json`` and ``state.json`` (normalised: ids, groups,
statuses, results, dependencies, labels, group status and parallel; no times, envs, paths or commands),
whether ``state.json`` was rewritten at that step, and the client's output with the temporary root
replaced. Then it compares the two records. Where they differ, the binaries are right.

Waits are on conditions (the status the step must reach). Steps where pueued must *not* save (stash,
enqueue, parallel, DependencyFailed, restart --in-place, the end of a v4 reset) give the daemon one tick
(``SETTLE``) to save anyway before the file is read.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.real_pueue import PueueBinaries, RealPueue, require_pueue
from tests.pueue_sim.scenario import install

SIM_FLAVOR = {"4.0.4": "v4", "3.4.1": "v3"}
SETTLE = 0.4  # one tick of pueued's task handler (300 ms in 4.0.4), to let a wrong save show up
Doc = dict[str, Any]


# --- normalising --------------------------------------------------------------------------------------


def _state_of(status: Any) -> str:
    name = status if isinstance(status, str) else next(iter(status))
    if name != "Done":
        return name
    inner = status["Done"]
    result = inner["result"] if isinstance(inner, dict) and "result" in inner else inner
    if isinstance(result, str):
        return f"Done/{result}"
    kind, detail = next(iter(result.items()))
    return f"Done/{kind}({detail})" if kind == "Failed" else f"Done/{kind}"


def normalise(document: Doc) -> Doc:
    """What both must agree on: no times, envs, paths, commands or created_at."""
    tasks = {
        key: {
            "id": task["id"], "group": task["group"], "label": task["label"], "priority": task["priority"],
            "dependencies": task["dependencies"], "status": _state_of(task["status"]),
        }
        for key, task in document["tasks"].items()
    }  # fmt: skip
    return {"tasks": tasks, "groups": document["groups"]}


ANSI_FREE = re.compile(r"\x1b\[[0-9;]*m")


def output(done: subprocess.CompletedProcess[str], root: Path) -> tuple[int, str, str]:
    """Exit code, stdout and stderr, with the temporary root (and the user's name in the socket) replaced."""

    def clean(text: str) -> str:
        return re.sub(r"pueue_[^/\"]+\.socket", "pueue_USER.socket", text.replace(str(root), "ROOT"))

    return done.returncode, clean(done.stdout), clean(done.stderr)


# --- one run of the scenario ----------------------------------------------------------------------------


@dataclass
class Host:
    """A RealPueue (real or simulated binaries) plus the gates its tasks wait on."""

    pueue: RealPueue

    @property
    def root(self) -> Path:
        return self.pueue.root

    def gate(self, name: str) -> str:
        path = self.root / "gates" / name  # a task whose run was torn down ends when its root goes
        return f"while [ ! -e {path} ]; do [ -d {self.root} ] || exit 9; sleep 0.05; done; exit $(cat {path})"

    def release(self, name: str, code: int) -> None:
        (self.root / "gates").mkdir(exist_ok=True)
        temp = self.root / "gates" / f".{name}"
        temp.write_text(str(code))
        temp.replace(self.root / "gates" / name)

    def file_mark(self) -> tuple[int, int, bytes] | None:
        try:
            info = self.pueue.state_file.stat()
            return info.st_ino, info.st_mtime_ns, self.pueue.state_file.read_bytes()
        except FileNotFoundError:
            return None

    def where(self, name: str) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob(name))


def task(key: int, document: Doc) -> Any:
    entry = document["tasks"].get(str(key))
    return None if entry is None else _state_of(entry["status"])


def group(name: str, document: Doc) -> Any:
    return document["groups"].get(name, {}).get("status")


@dataclass(frozen=True)
class Step:
    name: str
    args: tuple[str, ...]  # a pueue command, or () for a test action
    until: Callable[[Doc], bool] = lambda _d: True
    settle: bool = False  # pueued must not save here: give it a tick to do so anyway
    action: Callable[[Host], None] | None = None


def scenario(version: str) -> list[Step]:
    """Groups with parallel limits, --after and a kill (DependencyFailed), stash, enqueue, parallel,
    pause/pause --wait/start, a failing task, restart --in-place, clean -s -g, reset, refusals."""
    running = lambda *ids: lambda d: all(task(i, d) == "Running" for i in ids)  # noqa: E731
    return [
        Step("group add p1 (parallel 2)", ("group", "add", "p1", "--parallel", "2")),
        Step("group add p2", ("group", "add", "p2")),
        Step("add A to p2", ("add", "--group=p2", "--label", "a", "--", "GATE:a"), running(0)),
        Step(
            "add B --after A",
            ("add", "--group=p2", "--after", "0", "--label", "b", "--", "true"),
            lambda d: task(1, d) == "Queued",
        ),
        Step(
            "kill A: B DependencyFailed, not saved",
            ("kill", "0"),
            lambda d: task(1, d) == "Done/DependencyFailed",
            settle=True,
        ),
        Step("pause -g p1", ("pause", "--group=p1"), lambda d: group("p1", d) == "Paused"),
        Step("add C to paused p1", ("add", "--group=p1", "--label", "c", "--", "GATE:c")),
        Step("add D to paused p1", ("add", "--group=p1", "--label", "d", "--", "GATE:d")),
        Step("add E --after D", ("add", "--group=p1", "--after", "3", "--", "true")),
        Step("stash D: not saved", ("stash", "3"), lambda d: task(3, d) == "Stashed", settle=True),
        Step("enqueue D: not saved", ("enqueue", "3"), lambda d: task(3, d) == "Queued", settle=True),
        Step(
            "parallel 1 -g p1: not saved",
            ("parallel", "1", "--group=p1"),
            lambda d: d["groups"]["p1"]["parallel_tasks"] == 1,
            settle=True,
        ),
        Step("start -g p1: C runs", ("start", "--group=p1"), running(2)),
        Step("parallel 2 -g p1: D spawns", ("parallel", "2", "--group=p1"), running(2, 3)),
        Step(
            "pause -g p1 stops C and D",
            ("pause", "--group=p1"),
            lambda d: task(2, d) == task(3, d) == "Paused",
        ),
        Step("start -g p1 resumes them", ("start", "--group=p1"), running(2, 3)),
        Step(
            "pause --wait -g p1 lets them run",
            ("pause", "--wait", "--group=p1"),
            lambda d: group("p1", d) == "Paused" and task(2, d) == task(3, d) == "Running",
        ),
        Step(
            "C succeeds, D fails with 3, E waits in paused p1",
            (),
            action=lambda h: (h.release("c", 0), h.release("d", 3)),
            until=lambda d: task(2, d) == "Done/Success" and task(3, d) == "Done/Failed(3)",
            settle=True,
        ),
        Step(
            "restart --in-place D: not saved",
            ("restart", "--in-place", "3"),
            lambda d: task(3, d) == "Queued",
            settle=True,
        ),
        Step("clean -s -g p1 removes C", ("clean", "-s", "--group=p1"), lambda d: task(2, d) is None),
        Step(
            "start -g p1: D fails again, E DependencyFailed",
            ("start", "--group=p1"),
            lambda d: task(3, d) == "Done/Failed(3)" and task(4, d) == "Done/DependencyFailed",
            settle=True,
        ),
        Step("refused: start an unknown group", ("start", "--group=nope")),
        Step("refused: add after an unknown task", ("add", "--after", "99", "--", "true")),
        Step("refused: group add of an existing group", ("group", "add", "p1")),
        Step("reset: every task goes", ("reset", "--force"), lambda d: not d["tasks"], settle=True),
    ]


@dataclass
class Record:
    step: str
    out: tuple[int, str, str]
    status: Doc
    file: Doc | None
    saved: bool


def run_scenario(host: Host, steps: list[Step]) -> Iterator[Record]:
    pueue = host.pueue
    for step in steps:
        before = host.file_mark()
        if step.action is not None:
            step.action(host)
            out: tuple[int, str, str] = (0, "", "")
        else:
            args = [host.gate(a[5:]) if a.startswith("GATE:") else a for a in step.args]
            out = output(pueue.pueue(*args, check=False), host.root)
        document = pueue.wait_for(step.until, timeout=20, what=step.name)
        if step.settle:
            time.sleep(SETTLE)
            document = pueue.status()
        after = host.file_mark()
        file = None if after is None else normalise(json.loads(after[2]))
        yield Record(step.name, out, normalise(document), file, before != after)


@dataclass
class Run:
    """Everything one daemon (real or simulated) did in the scenario."""

    pid_files: list[str]
    sockets: list[str]
    records: list[Record]
    down: tuple[int, str, str] = (0, "", "")
    never: tuple[int, str, str] = (0, "", "")
    runtime_missing: tuple[int, str, str] = (0, "", "")
    error: BaseException | None = None


def execute(bins: PueueBinaries, layout: str, version: str) -> Run:
    root = Path(tempfile.mkdtemp(prefix="pdiff-", dir="/tmp"))  # short: a socket path has 107 bytes
    pueue = RealPueue(root, bins, layout)
    host = Host(pueue)
    try:
        pueue.start()
        run = Run(host.where("pueue.pid"), host.where("pueue_*.socket"), [])
        run.records = list(run_scenario(host, scenario(version)))
        pueue.pueue("shutdown")
        pueue.proc.wait(20)  # type: ignore[union-attr]
        pueue.proc = None
        run.down = output(pueue.pueue("status", "--json", check=False), root)
        (pueue.pueue_dir / "shared_secret").unlink()
        run.never = output(pueue.pueue("status", "--json", check=False), root)
        if layout == "runtime":  # pueued does not create a missing runtime directory
            shutil.rmtree(pueue.runtime_dir)
            done = subprocess.run([bins.pueued], env=pueue.env, capture_output=True, text=True, timeout=30,
                                  check=False, stdin=subprocess.DEVNULL)  # fmt: skip
            run.runtime_missing = output(done, root)
        return run
    finally:
        pueue.remove()
        shutil.rmtree(root, ignore_errors=True)


def simulator(version: str, root: Path) -> PueueBinaries:
    client, daemon = install(root / "bin", SIM_FLAVOR[version], version)
    return PueueBinaries(version, client, daemon)


@pytest.mark.parametrize("layout", ["runtime", "plain"])
@pytest.mark.parametrize("version", ["4.0.4", "3.4.1"])
def test_simulator_matches_real_pueue(version: str, layout: str, tmp_path: Path) -> None:
    """Step by step, the simulator's status, state file, save points, output and errors are real pueue's."""
    real_bins = require_pueue(version)
    sim_bins = simulator(version, tmp_path)
    runs: dict[str, Run] = {}

    def go(name: str, bins: PueueBinaries) -> None:
        try:
            runs[name] = execute(bins, layout, version)
        except BaseException as err:  # reported below, from the main thread
            runs[name] = Run([], [], [], error=err)

    threads = [threading.Thread(target=go, args=(n, b)) for n, b in (("real", real_bins), ("sim", sim_bins))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    real, sim = runs["real"], runs["sim"]
    for name, run in runs.items():
        if run.error is not None:
            raise AssertionError(f"{name} pueue {version} ({layout}) failed") from run.error

    expected_pid = ["run/pueue.pid"] if layout == "runtime" else ["home/.local/share/pueue/pueue.pid"]
    assert real.pid_files == expected_pid
    assert (sim.pid_files, sim.sockets) == (real.pid_files, real.sockets)
    for mine, theirs in zip(sim.records, real.records, strict=True):
        assert mine == theirs, f"step {theirs.step!r}"
    assert sim.down == real.down
    assert sim.never == real.never
    assert sim.runtime_missing == real.runtime_missing
