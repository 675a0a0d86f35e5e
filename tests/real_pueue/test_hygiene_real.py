"""Hygiene against real pueued 4.0.4 and 3.4.1, in both layouts: ``python -m watcher once`` on the local host.

The large case is the acceptance of issue 12: 53,000 finished tasks (~70 MB) end below 1 MB within three
``once`` runs, with no error. The small ones pin what a whole-host ``pueue clean -s`` must not do: lose or
falsify a phase's record when a running task finishes between the plan's check and pueued taking its lock, or
remove failed tasks of a group whose phase is not recorded; and that a partial clean (pueue keeps a task an
unfinished one depends on; the budget runs out) is recorded as such, with exit 0. The bulk removal (scope
"bulk", in chunks of ``pueue remove``) and the guard (a task that finished since the plan defers the clean;
added ones do not) are driven in-process against the same daemons, with the bulk's threshold lowered.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import watcher.hygiene as hygiene_module
from tests.harness.fleet import watcher, write_config
from tests.harness.real_pueue import LAYOUTS, VERSIONS, RealPueue, real_pueue
from tests.pueue_sim.generate import generate_state
from watcher.config import HostConfig, HygieneSection
from watcher.hygiene import Hygiene, candidates
from watcher.phases.tracker import GroupTrack
from watcher.poll.poller import HostPoller, PollResult
from watcher.records import CleanRecord
from watcher.transport.local import LocalTransport

BOTH = [pytest.param((v, layout), id=f"{v}-{layout}") for v in VERSIONS for layout in LAYOUTS]


@pytest.fixture(params=BOTH)
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RealPueue]:
    version, layout = request.param
    with real_pueue(tmp_path / "pueue", version, layout) as started:
        yield started


def config(root: Path, host: RealPueue, pueue: Path | None = None, **hygiene: Any) -> Path:
    entry = {"name": "local", "transport": "local", "pueue": str(pueue or host.bins.pueue)}
    sections = {
        "watcher": {"state_path": str(root / "watcher.db"), "host_timeout": "60s"},
        "hygiene": {"max_state_bytes": 1, "cooldown": "0.1s"} | hygiene,
        "metrics": {"listen": ""},
    }
    return write_config(root / "config.toml", [entry], **sections)


def once(path: Path, host: RealPueue) -> tuple[int, list[dict[str, Any]], str]:
    """``python -m watcher once --json`` with the pueue host's environment: exit code, events, stderr."""
    done = watcher("once", "-c", str(path), "--json", env=host.env | _python_env(), timeout=900)
    events = json.loads(done.stdout) if done.stdout.strip().startswith("[") else []
    return done.returncode, events, done.stderr


def _python_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "VIRTUAL_ENV")}


def history(path: Path, host: RealPueue) -> list[dict[str, Any]]:
    done = watcher("history", "-c", str(path), "--json", env=host.env | _python_env())
    assert done.returncode == 0, done.stderr
    entries: list[dict[str, Any]] = json.loads(done.stdout)
    return entries


def wrapper(root: Path, host: RealPueue, before_clean: str) -> Path:
    """A ``pueue`` that runs ``before_clean`` (Python, with ``pueue(*args)``) before a ``clean``."""
    path = root / "pueue-wrapper"
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, os, subprocess, sys, time\n"
        f"REAL = {str(host.bins.pueue)!r}\n"
        "def pueue(*args):\n"
        "    return subprocess.run([REAL, *args], capture_output=True, text=True).stdout\n"
        "if 'clean' in sys.argv[1:]:\n"
        + "".join(f"    {line}\n" for line in before_clean.splitlines())
        + "os.execv(REAL, [REAL, *sys.argv[1:]])\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def wait_done(host: RealPueue, task: int) -> None:
    host.wait_for(
        lambda d: host.task_state(task, d) not in ("Queued", "Running", "Locked"), what=f"#{task} done"
    )


@pytest.mark.parametrize(("version", "layout"), [("4.0.4", "runtime"), ("3.4.1", "plain")])
def test_53000_finished_tasks_end_below_1mb_within_3_cycles(
    tmp_path: Path, version: str, layout: str
) -> None:
    """53,000 successful tasks in 40 complete groups (~70 MB, max_state_bytes 50MB): removed in bulk, then the
    rest, below 1 MB within three ``once`` runs, each exiting 0, with the cleans recorded and history keeping
    every group's phase."""
    root = tmp_path / "pueue"
    pueue = RealPueue(root, _bins(version), layout)
    pueue.pueue_dir.mkdir(parents=True, exist_ok=True)
    flavor = "v4" if version.startswith("4") else "v3"
    generate_state(pueue.pueue_dir, flavor, 53_000, 40, statuses={"Success": 1.0}, envs_bytes=1320, seed=1)
    assert pueue.state_file.stat().st_size > 65_000_000
    pueue.start(timeout=120)
    try:
        path = config(tmp_path, pueue, max_state_bytes="50MB", timeout="15m")
        cleaned = []
        for _ in range(3):
            code, events, stderr = once(path, pueue)
            assert code == 0, stderr[-2000:]
            assert "clean_failed" not in stderr
            cleaned += [e for e in events if e["event"] == "state.cleaned"]
            if pueue.state_file.stat().st_size < 1_000_000:
                break
        assert pueue.state_file.stat().st_size < 1_000_000
        assert cleaned and cleaned[0]["scope"] == "bulk" and not cleaned[0]["partial"]
        # The bulk takes the complete, Running groups; the next cycle's whole-host clean the Paused ones.
        assert sum(n for c in cleaned for counts in c["removed"].values() for n in counts.values()) == 53_000
        phases = [p for p in history(path, pueue) if p["status"] == "completed"]
        assert len(phases) == 40
    finally:
        pueue.stop()


def _bins(version: str) -> Any:
    from tests.harness.real_pueue import require_pueue

    return require_pueue(version)


def test_a_task_that_succeeds_as_the_clean_starts_completes_its_phase(
    tmp_path: Path, host: RealPueue
) -> None:
    """A running task that finishes between the plan's check and pueued's clean is removed by ``clean -s``
    unseen; the watcher counts it as the success it was, and its group's phase completes, not abandoned."""
    release = tmp_path / "release"
    host.group_add("busy")
    first = host.add("true", group="busy", label="first")
    wait_done(host, first)
    last = host.add(f"while [ ! -e {release} ]; do sleep 0.05; done", group="busy", label="last")
    host.wait_for(lambda d: host.task_state(last, d) == "Running", what="last running")
    wait_done(host, host.add("true", label="other"))  # the default group: complete
    # The window, made wide: the wrapper lets `last` finish, and waits until pueued has it Done, after the
    # clean script checked the state file and before `pueue clean -s` reaches pueued.
    before = (
        f"open({str(release)!r}, 'w').close()\n"
        f"while 'Done' not in json.dumps(json.loads(pueue('status', '--json'))['tasks']['{last}']):\n"
        "    time.sleep(0.05)\n"
    )
    path = config(tmp_path, host, wrapper(tmp_path, host, before))
    code, events, stderr = once(path, host)
    assert code == 0, stderr
    assert host.status()["tasks"] == {}, "the whole host's successful tasks were cleaned"
    busy = [p for p in history(path, host) if p["group"] == "busy"]
    assert [(p["status"], p["outcome"], p["counts"]) for p in busy] == [
        ("completed", "success", {"success": 2})
    ]
    cleaned = [e for e in events if e["event"] == "state.cleaned"]
    assert len(cleaned) == 1 and cleaned[0]["scope"] == "host"


def test_a_task_others_depend_on_is_kept_and_the_clean_is_partial(tmp_path: Path, host: RealPueue) -> None:
    """pueue keeps a successful task that a queued task depends on: the clean is recorded as partial, with
    what was kept, and ``once`` exits 0."""
    base = host.add("true", label="base")
    host.add("true", label="alone")
    wait_done(host, base)
    host.group_add("later")
    host.pueue("pause", "--group=later")
    host.add("true", group="later", after=[base], label="waits")
    path = config(tmp_path, host)
    code, events, stderr = once(path, host)
    assert code == 0, stderr
    cleaned = [e for e in events if e["event"] == "state.cleaned"]
    assert len(cleaned) == 1
    assert cleaned[0]["partial"] is True
    assert cleaned[0]["kept"] == {"default": 1}
    assert "depend" in cleaned[0]["note"]
    assert str(base) in host.status()["tasks"]


def test_an_expired_budget_is_a_partial_clean_not_an_error(tmp_path: Path, host: RealPueue) -> None:
    """The clean outlives ``hygiene.timeout``: recorded as partial (the budget ran out), and ``once`` exits
    0."""
    done = host.add("true")
    wait_done(host, done)
    path = config(tmp_path, host, wrapper(tmp_path, host, "time.sleep(30)"), timeout="1s")
    code, events, stderr = once(path, host)
    assert code == 0, stderr
    cleaned = [e for e in events if e["event"] == "state.cleaned"]
    assert len(cleaned) == 1, stderr
    assert cleaned[0]["partial"] is True
    assert "budget" in cleaned[0]["note"]
    assert cleaned[0]["kept"] == {"default": 1}


def test_clean_all_keeps_failed_tasks_of_a_group_still_running(tmp_path: Path, host: RealPueue) -> None:
    """``clean = "all"``: failed tasks of a complete, recorded group go; those of a group whose phase is still
    open stay (its successful tasks go, and the tracker keeps them)."""
    host.group_add("busy")
    failed_busy = host.add("false", group="busy")
    wait_done(host, failed_busy)
    ok_busy = host.add("true", group="busy")
    wait_done(host, ok_busy)
    release = tmp_path / "release"
    running = host.add(f"while [ ! -e {release} ]; do sleep 0.05; done", group="busy")
    failed_done = host.add("false")
    wait_done(host, failed_done)
    host.wait_for(lambda d: host.task_state(running, d) == "Running", what="running")
    path = config(tmp_path, host, clean="all")
    code, _, stderr = once(path, host)
    assert code == 0, stderr
    left = set(host.status()["tasks"])
    assert left == {str(failed_busy), str(running)}
    release.touch()
    wait_done(host, running)
    code, _, stderr = once(path, host)
    assert code == 0, stderr
    busy = [p for p in history(path, host) if p["group"] == "busy"]
    assert [(p["status"], p["counts"]) for p in busy] == [("completed", {"failed": 1, "success": 2})]


class InProcess:
    """The watcher's poller and hygiene in this process, against ``host`` (its environment patched in)."""

    def __init__(self, host: RealPueue, monkeypatch: pytest.MonkeyPatch, **hygiene: Any) -> None:
        for name in ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "PUEUE_CONFIG_PATH"):
            monkeypatch.delenv(name, raising=False)
        for name, value in host.env.items():
            monkeypatch.setenv(name, value)
        self.config = HostConfig(name="local", transport="local", pueue=str(host.bins.pueue))
        self.poller = HostPoller(self.config, LocalTransport(), timeout=60)
        settings = {"max_state_bytes": 1, "cooldown": 0.001} | hygiene
        self.hygiene = Hygiene(HygieneSection.model_validate(settings))

    async def plan(self, tracks: dict[str, GroupTrack]) -> tuple[PollResult, CleanRecord]:
        result = await self.poller.poll()
        assert result.ok and result.snapshot is not None, result.error
        plan = self.hygiene.plan("local", result, tracks, result.at)
        assert plan is not None
        return result, plan

    async def clean(self, result: PollResult, plan: CleanRecord) -> bool:
        assert result.snapshot is not None
        fingerprint = self.poller.fingerprint or ""
        return await self.hygiene.clean(self.config, self.poller.transport, plan, 60, fingerprint,
                                        done=result.file_done, candidates=candidates(plan, result.snapshot),
                                        tasks=result.file_tasks)  # fmt: skip


def recorded(*groups: str) -> dict[str, GroupTrack]:
    """Tracks of complete groups whose phase is on record."""
    return {g: GroupTrack() for g in groups}


async def test_bulk_never_removes_a_reused_id_with_another_created_at(
    host: RealPueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the bulk plan and its chunk, someone cleans and pueue gives the same ids to new tasks: their
    created_at differs, so the chunk's check in the state file finds none of them, and nothing is removed."""
    monkeypatch.setattr(hygiene_module, "BULK_ABOVE_TASKS", 0)
    run = InProcess(host, monkeypatch)
    old = [host.add("true"), host.add("true")]
    for task in old:
        wait_done(host, task)
    result, plan = await run.plan(recorded("default"))
    assert plan.scope == "bulk" and plan.groups == ["default"]
    await asyncio.sleep(1.1)  # the new tasks' created_at must differ to the second from the old ones'
    host.pueue("clean")
    new = [host.add("true"), host.add("true")]
    assert new == old, "pueue numbers again from 0 once its task list is empty"
    for task in new:
        wait_done(host, task)
    assert await run.clean(result, plan)
    assert sorted(host.status()["tasks"]) == sorted(str(t) for t in new), "the reused ids must stay"
    again, plan = await run.plan(recorded("default"))
    assert await run.clean(again, plan)
    assert host.status()["tasks"] == {}, "the same tasks, seen by a plan, go"


async def test_bulk_leaves_a_paused_complete_group_to_the_regular_clean(
    host: RealPueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A complete group that is Paused is no bulk candidate (a task restarted in place there would be Queued
    and removable): the bulk removes the running group's tasks only, and the next plan is a regular clean."""
    monkeypatch.setattr(hygiene_module, "BULK_ABOVE_TASKS", 0)
    run = InProcess(host, monkeypatch)
    host.group_add("held")
    ok = host.add("true")
    held = host.add("true", group="held")
    for task in (ok, held):
        wait_done(host, task)
    host.pueue("pause", "--group=held")
    result, plan = await run.plan(recorded("default", "held"))
    assert (plan.scope, plan.groups) == ("bulk", ["default"])
    assert await run.clean(result, plan)
    assert sorted(host.status()["tasks"]) == [str(held)]
    monkeypatch.setattr(hygiene_module, "BULK_ABOVE_TASKS", 10**9)
    result, plan = await run.plan(recorded("default", "held"))
    assert (plan.scope, plan.groups) == ("host", ["held"])
    assert await run.clean(result, plan)
    assert host.status()["tasks"] == {}


async def test_tasks_added_after_the_plan_do_not_defer_the_clean(
    host: RealPueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard counts Done tasks: tasks added since the plan's poll (stashed, queued, running) change the
    state file but not that count, and the whole-host clean goes ahead."""
    run = InProcess(host, monkeypatch)
    wait_done(host, host.add("true"))
    result, plan = await run.plan(recorded("default"))
    assert plan.scope == "host" and result.file_done == 1
    host.group_add("other")
    stashed = host.add("true", group="other", stashed=True)
    release = host.root / "release"
    running = host.add(f"while [ ! -e {release} ]; do sleep 0.05; done", group="other")
    host.wait_for(lambda d: host.task_state(running, d) == "Running", what="running")
    assert (await run.clean(result, plan)) is True
    assert sorted(host.status()["tasks"]) == sorted([str(stashed), str(running)])
    release.touch()
    wait_done(host, running)


async def test_a_task_that_finished_after_the_plan_defers_the_clean(
    host: RealPueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that finished since the plan's poll is one more Done task in the state file: nothing is
    removed, and the next plan (which sees it) goes ahead."""
    run = InProcess(host, monkeypatch)
    first = host.add("true")
    wait_done(host, first)
    release = host.root / "release"
    host.group_add("busy")
    late = host.add(f"while [ ! -e {release} ]; do sleep 0.05; done", group="busy")
    host.wait_for(lambda d: host.task_state(late, d) == "Running", what="running")
    result, plan = await run.plan(recorded("default"))
    assert plan.groups == ["default"]
    release.touch()
    host.wait_for(
        lambda _: host.task_state(late, host.file_state()) == "Success", what="the file shows it Done"
    )
    assert (await run.clean(result, plan)) is False
    assert sorted(host.status()["tasks"]) == sorted([str(first), str(late)]), "nothing may be removed"
    result, plan = await run.plan(recorded("default", "busy"))
    assert await run.clean(result, plan)
    assert host.status()["tasks"] == {}


@pytest.mark.parametrize(("version", "layout"), [("4.0.4", "runtime"), ("3.4.1", "plain")])
async def test_bulk_removes_a_task_created_in_the_last_half_microsecond_of_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, layout: str
) -> None:
    """pueue writes ``created_at`` in nanoseconds and msgspec rounds them to microseconds: a task created at
    ``…:59.9999997`` reads as ``…:00`` of the next minute. The bulk still finds it in the state file as the
    same task, and removes it (it stayed, one task in two million, and the 53,000-task bulk was partial)."""
    monkeypatch.setattr(hygiene_module, "BULK_ABOVE_TASKS", 0)
    host = RealPueue(tmp_path / "pueue", _bins(version), layout)
    host.pueue_dir.mkdir(parents=True, exist_ok=True)
    flavor = "v4" if version.startswith("4") else "v3"
    generate_state(host.pueue_dir, flavor, 2, 1, statuses={"Success": 1.0}, seed=1)
    state = host.state_file.read_text()
    edge = re.sub(r'("0":\{"id":0,"created_at":"[^".]*:)\d\d\.\d+', r"\g<1>59.999999700", state, count=1)
    assert edge != state
    host.state_file.write_text(edge)
    host.start()
    try:
        run = InProcess(host, monkeypatch)
        result, plan = await run.plan(recorded("default"))
        assert plan.scope == "bulk" and plan.groups == ["default"]
        assert await run.clean(result, plan)
        assert host.status()["tasks"] == {}
    finally:
        host.stop()
