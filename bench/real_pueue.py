"""Real pueued 4.0.4 on the 53,000-task state (~74 MB): what watching it costs ``pueue add``, and
``pueue-watcher status --json`` against the seed's pipeline on the same daemon.

The state is status_large's generated v4 file (cached under bench/data/), copied into a fresh HOME and
restored by a real ``pueued`` (upstream 4.0.4, see tests/harness/real_pueue.py). pueued restores it with
every group paused, so nothing runs: the queue only changes through this benchmark's adds. It runs in both
of pueue's layouts: ``runtime`` ($XDG_RUNTIME_DIR set, pueue.pid and the socket there: a systemd user
service, or ``pueued -d`` from an SSH login) and ``plain`` (everything beside state.json).

1. ``pueue add`` latency, ADDS adds (into the paused group p1), one every ADD_SPACING s, so that each
   condition spans many polls, in three conditions, one after the other on the same daemon:
   - idle: nothing watching;
   - watcher: ``python -m watcher run`` at ``poll_interval = 2s`` (local transport, hygiene off so that it
     never cleans the state under the measure, metrics off), first QUIET s with nothing changing (after its
     first poll), then the adds;
   - seed loop: ``while true; do pueue status --json | jq FILTER >/dev/null; sleep 2; done`` (the jq filter
     of bench/status_large.py).
   The watcher's ``pueue`` is a wrapper that logs its argv and execs the real client: every ``pueue status``
   it runs is counted (target: none, in the quiet window and while the adds run). Also per condition: the CPU
   pueued used in the window, and the watcher's (or the loop's) own CPU, children included.
2. With nothing watching: ``python -m watcher status --json`` (the whole process, a direct poll of the local
   host) against ``pueue status --json | jq -r FILTER > /dev/null``, STATUS_RUNS runs each: median wall time
   and peak RSS (wait4's ru_maxrss: the largest single process of the command, as bench/common measures).

The machine is shared (2 cores, other test runs): figures are noisy; the load average at the start of each
round is printed beside it. Each condition runs in ROUNDS rounds (idle, watcher, seed loop, then
again), so that a burst of load elsewhere does not land on one condition only. Seen so far: the watcher's add
overhead is within a few percent on a quiet machine and drifts by about ±15 % under a load of 2-7 (its changed
polls cost ~0.5 s of CPU each, which competes with pueued for the two cores).

``PW_BENCH_WATCHER_TREE=DIR`` runs the watcher from DIR (``python -m watcher`` with DIR as its working
directory), e.g. ``git archive REV watcher checks | tar -x -C DIR`` to measure another revision against the
same daemon and state; ``PW_BENCH_REAL_ADDS`` changes the number of adds per condition.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import measure, save, table
from bench.idle import cpu_seconds, cycle_totals, stop_daemon, tree_cpu_seconds
from bench.status_large import JQ_FILTER, large_state
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import REPO, write_config
from tests.harness.real_pueue import PueueBinaries, RealPueue, find_binaries

VERSION = "4.0.4"
LAYOUTS = ("runtime", "plain")
ADDS = int(os.environ.get("PW_BENCH_REAL_ADDS", "30"))  # per condition, over ROUNDS rounds
ROUNDS = 2  # idle, watcher, seed loop, then again: the machine's load drifts at the scale of a minute
ADD_SPACING = 1.0  # seconds between the starts of two adds
ADD_GROUP = "p1"  # paused (every group is, once pueued has restored the state): the added tasks never run
POLL_INTERVAL = "2s"
QUIET = 6.0  # the watcher's window with nothing changing, after its first poll
SEED_SLEEP = 2
STATUS_RUNS = 3
TARGETS = {
    "watcher_add_median_overhead_at_most": 0.10,
    "watcher_status_calls_at_most": 0,
    "status_speedup_at_least": 5.0,
    "status_peak_rss_over_file_at_most": 2.0,
}

# The host's `pueue` as the watcher sees it: logs its arguments, then is the real client.
WRAPPER = """#!/bin/sh
printf '%s\\n' "$*" >> {log}
exec {real} "$@"
"""
SEED_LOOP = (
    'while true; do "$0" status --json 2>/dev/null | jq -r "$1" > /dev/null; '
    'echo . >> "$2"; sleep {sleep}; done'
)
# The watcher that runs (python -m watcher, from this directory): this checkout, or e.g. an unpacked
# `git archive REV` to measure another revision.
WATCHER_TREE = Path(os.environ.get("PW_BENCH_WATCHER_TREE", str(REPO))).resolve()
BASELINE = '"$0" status --json 2>/dev/null | jq -r "$1" > /dev/null'


class WatcherProcess(DaemonProcess):
    """The watcher daemon with the pueue host's environment (HOME, XDG_RUNTIME_DIR) instead of ours."""

    def __init__(self, config: Path, log: Path, env: dict[str, str]) -> None:
        super().__init__(config, log)
        self.env = env

    def start(self) -> WatcherProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "watcher", "run", "-c", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, cwd=WATCHER_TREE,
                env={**self.env, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        return self


def watcher_env(host: RealPueue) -> dict[str, str]:
    """This process's environment with the host's login variables: pueue's paths are the host's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("XDG_RUNTIME_DIR", "XDG_DATA_HOME", "XDG_CONFIG_HOME")
    }
    return env | host.env


def status_calls(log: Path) -> int:
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if line.split()[:1] == ["status"])


def latencies(host: RealPueue, n: int, spacing: float = ADD_SPACING) -> list[float]:
    """``n`` adds, one every ``spacing`` seconds (or right after the previous one, if that took longer)."""
    out = []
    t0 = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, t0 + i * spacing - time.monotonic()))
        t = time.perf_counter()
        host.pueue("add", f"--group={ADD_GROUP}", "--", "true", timeout=120)
        out.append(time.perf_counter() - t)
    return out


def summary(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {
        "n": len(samples),
        "median": statistics.median(samples),
        "p95": p95,
        "max": ordered[-1],
        "samples": samples,
    }


class Window:
    """CPU of pueued and of the watching process (children included) across one condition."""

    def __init__(self, pueued: int, watcher: int | None) -> None:
        self.pueued, self.watcher = pueued, watcher
        self.load = os.getloadavg()[0]

    def __enter__(self) -> Window:
        self.t0 = time.monotonic()
        self.p0 = cpu_seconds(self.pueued)
        self.w0 = tree_cpu_seconds(self.watcher) if self.watcher else 0.0
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.monotonic() - self.t0
        self.pueued_cpu = cpu_seconds(self.pueued) - self.p0
        self.watcher_cpu = tree_cpu_seconds(self.watcher) - self.w0 if self.watcher else None

    def row(self) -> dict[str, Any]:
        return {
            "load_average_1m_at_start": self.load,
            "window_seconds": self.wall,
            "pueued_cpu_seconds": self.pueued_cpu,
            "watching_cpu_seconds": self.watcher_cpu,
        }


def condition_idle(host: RealPueue, pueued: int, n: int) -> dict[str, Any]:
    with Window(pueued, None) as window:
        samples = latencies(host, n)
    return {"samples": samples} | window.row()


def condition_watcher(
    root: Path, host: RealPueue, pueued: int, pueue: Path, calls: Path, n: int
) -> dict[str, Any]:
    config = write_config(
        root / "watcher.toml",
        [{"name": "local", "transport": "local", "pueue": str(pueue)}],
        watcher={"state_path": str(root / "watcher.db"), "poll_interval": POLL_INTERVAL, "fast_interval": 0},
        hygiene={"clean": "off"},
        metrics={"listen": ""},
    )
    daemon = WatcherProcess(config, root / "watcher.log", watcher_env(host))
    try:
        daemon.start()
        assert daemon.proc is not None
        began = datetime.now(UTC)
        daemon.wait_for(lambda: any(c.get("ok") and began <= datetime.fromisoformat(c["timestamp"])
                                    for c in daemon.events("cycle")), timeout=120)  # fmt: skip
        first_poll = (datetime.now(UTC) - began).total_seconds()
        calls_before_quiet = status_calls(calls)
        quiet_start = datetime.now(UTC)
        time.sleep(QUIET)
        quiet_end = datetime.now(UTC)
        calls_quiet = status_calls(calls) - calls_before_quiet
        with Window(pueued, daemon.proc.pid) as window:
            samples = latencies(host, n)
        adds_end = datetime.now(UTC)
        calls_adds = status_calls(calls) - calls_before_quiet - calls_quiet
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"the watcher exited:\n{daemon.log.read_text()[-3000:]}")
    finally:
        stop_daemon(daemon)
    lines = daemon.lines()
    _, quiet = cycle_totals(lines, quiet_start, quiet_end)
    _, adds = cycle_totals(lines, quiet_end, adds_end)
    return (
        {"samples": samples}
        | window.row()
        | {
            "first_poll_seconds": [first_poll],
            "quiet_seconds": QUIET,
            "quiet_status_calls": calls_quiet,
            "quiet_cycle_totals": quiet,
            "adds_status_calls": calls_adds,
            "adds_cycle_totals": adds,
            "host_failing_lines": sum(1 for line in lines if line.get("event") == "host.failing"),
        }
    )


def condition_seed(root: Path, host: RealPueue, pueued: int, n: int) -> dict[str, Any]:
    iterations = root / "seed.iterations"
    iterations.unlink(missing_ok=True)
    loop = subprocess.Popen(
        ["sh", "-c", SEED_LOOP.format(sleep=SEED_SLEEP), str(host.bins.pueue), JQ_FILTER, str(iterations)],
        env=host.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(SEED_SLEEP)
        done0 = iterations.read_text().count(".") if iterations.exists() else 0
        with Window(pueued, loop.pid) as window:
            samples = latencies(host, n)
        done = (iterations.read_text().count(".") if iterations.exists() else 0) - done0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(loop.pid, signal.SIGKILL)
        loop.wait()
    return {"samples": samples} | window.row() | {"loop_iterations": done}


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One condition over its rounds: the samples together, counters summed, loads and first polls listed."""
    merged: dict[str, Any] = {}
    for key, first in parts[0].items():
        values = [p[key] for p in parts]
        if key == "load_average_1m_at_start":
            merged["load_average_1m"] = values
        elif isinstance(first, list):
            merged[key] = [v for value in values for v in value]
        elif isinstance(first, dict):
            merged[key] = {k: sum(v[k] for v in values) for k in first}
        elif first is None:
            merged[key] = None
        else:
            merged[key] = sum(values)
    return summary(merged.pop("samples")) | merged


def status_compare(root: Path, host: RealPueue, pueue: Path, calls: Path) -> dict[str, Any]:
    config = write_config(
        root / "status.toml",
        [{"name": "local", "transport": "local", "pueue": str(pueue)}],
        watcher={"state_path": str(root / "status.db")},
        metrics={"listen": ""},
    )
    env = watcher_env(host)
    before = status_calls(calls)
    argv = [sys.executable, "-m", "watcher", "status", "--json", "-c", str(config)]
    ours = [measure(argv, env=env, cwd=WATCHER_TREE) for _ in range(STATUS_RUNS)]
    ours_calls = status_calls(calls) - before
    for run in ours:
        assert run.returncode == 0, run.stdout[:500]
        assert b'"ok": true' in run.stdout or b'"ok":true' in run.stdout, run.stdout[:500]
    base = [measure(["sh", "-c", BASELINE, str(host.bins.pueue), JQ_FILTER], env=host.env)
            for _ in range(STATUS_RUNS)]  # fmt: skip
    assert all(r.returncode == 0 for r in base), base[0]
    size = host.state_file.stat().st_size
    ours_wall = statistics.median(r.wall_seconds for r in ours)
    base_wall = statistics.median(r.wall_seconds for r in base)
    ours_rss = max(r.peak_rss_bytes for r in ours)
    return {
        "state_bytes": size,
        "ours": {
            "runs": [r.row() for r in ours],
            "wall_seconds_median": ours_wall,
            "peak_rss_bytes": ours_rss,
            "pueue_status_calls": ours_calls,
        },
        "baseline": {
            "runs": [r.row() for r in base],
            "wall_seconds_median": base_wall,
            "peak_rss_bytes": max(r.peak_rss_bytes for r in base),
        },
        "speedup": base_wall / ours_wall,
        "peak_rss_over_file": ours_rss / size,
    }


def one_layout(root: Path, bins: PueueBinaries, layout: str, state: Path) -> dict[str, Any]:
    host = RealPueue(root / "host", bins, layout)
    host.pueue_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(state, host.state_file)
    calls = root / "pueue-calls.log"
    pueue = root / "bin" / "pueue"
    pueue.parent.mkdir()
    pueue.write_text(WRAPPER.format(log=shlex.quote(str(calls)), real=shlex.quote(str(bins.pueue))))
    pueue.chmod(0o755)
    t = time.monotonic()
    host.start(timeout=180)
    try:
        assert host.proc is not None
        pueued = host.proc.pid
        figures: dict[str, Any] = {"layout": layout, "pid_file": str(host.pid_file),
                                   "restore_seconds": time.monotonic() - t}  # fmt: skip
        print(f"  [{layout}] pueued restored the state in {figures['restore_seconds']:.1f} s", flush=True)
        rounds: dict[str, list[dict[str, Any]]] = {"idle": [], "watcher": [], "seed": []}
        n = ADDS // ROUNDS
        for r in range(1, ROUNDS + 1):
            what = f"{n} adds idle, under the watcher, under the seed loop"
            print(f"  [{layout}] round {r}/{ROUNDS}: {what} ...", flush=True)
            rounds["idle"].append(condition_idle(host, pueued, n))
            rounds["watcher"].append(condition_watcher(root, host, pueued, pueue, calls, n))
            rounds["seed"].append(condition_seed(root, host, pueued, n))
        for key, parts in rounds.items():
            figures[key] = merge(parts)
        figures["watcher"]["status_calls_total"] = status_calls(calls)
        print(f"  [{layout}] status --json against the seed's pipeline ...", flush=True)
        figures["status"] = status_compare(root, host, pueue, calls)
    finally:
        host.stop()
    idle = figures["idle"]["median"]
    figures["watcher_add_median_overhead"] = figures["watcher"]["median"] / idle - 1
    figures["seed_add_median_overhead"] = figures["seed"]["median"] / idle - 1
    return figures


def watcher_revision() -> str:
    """Which watcher ran: the checkout's HEAD, and whether watcher/ had uncommitted changes."""
    if WATCHER_TREE != REPO:
        return str(WATCHER_TREE)
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "watcher", "checks"], check=False)
    return head.stdout.strip() + (" + uncommitted changes in watcher/" if dirty.returncode else "")


def run() -> dict[str, Any]:
    started = time.monotonic()
    bins = find_binaries().get(VERSION)
    if bins is None:
        print(f"real pueue {VERSION} not found ($PUEUE_BIN_DIR, ../shared/pueue/bin, PATH): scenario not run")
        return {}
    state = large_state() / "state.json"
    figures: dict[str, Any] = {
        "pueue_version": VERSION,
        "state_bytes": state.stat().st_size,
        "adds": ADDS,
        "add_spacing_seconds": ADD_SPACING,
        "poll_interval": POLL_INTERVAL,
        "cpus": os.cpu_count(),
        "watcher_tree": watcher_revision(),
        "layouts": {},
    }
    for layout in LAYOUTS:
        with tempfile.TemporaryDirectory(prefix=f"pw-bench-real-{layout}-") as tmp:
            figures["layouts"][layout] = one_layout(Path(tmp), bins, layout, state)
    figures["targets"] = TARGETS
    figures["seconds"] = time.monotonic() - started
    report(figures)
    print(f"results: {save('real', figures)}")
    return figures


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(f: dict[str, Any]) -> None:
    print(f"\nreal pueued {f['pueue_version']}, {f['state_bytes'] / 1e6:.1f} MB state (53,000 tasks, every "
          f"group paused); {f['adds']} adds into {ADD_GROUP}, one every {f['add_spacing_seconds']:g} s; "
          f"{f['cpus']} cores, shared; watcher: {f['watcher_tree']}")  # fmt: skip
    head = ("layout", "condition", "add ms med", "p95", "max", "med vs idle", "load", "pueued CPU s")
    rows: list[tuple[str, ...]] = [(*head, "watching CPU s", "pueue status calls")]
    for layout, lf in f["layouts"].items():
        for key, name in (("idle", "idle"), ("watcher", f"watcher ({POLL_INTERVAL})"),
                          ("seed", f"seed loop ({SEED_SLEEP}s)")):  # fmt: skip
            c = lf[key]
            vs = "-" if key == "idle" else f"{100 * (c['median'] / lf['idle']['median'] - 1):+.1f} %"
            if key == "watcher":
                q, a = c["quiet_cycle_totals"], c["adds_cycle_totals"]
                calls = (f"{c['quiet_status_calls']} in {q['polls']} quiet polls, "
                         f"{c['adds_status_calls']} in {a['polls']} polls during adds")  # fmt: skip
            elif key == "seed":
                calls = f"{c['loop_iterations']} (the loop)"
            else:
                calls = "-"
            watching = "-" if c["watching_cpu_seconds"] is None else f"{c['watching_cpu_seconds']:.1f}"
            rows.append((layout, name, f"{1000 * c['median']:.0f}", f"{1000 * c['p95']:.0f}",
                         f"{1000 * c['max']:.0f}", vs, "/".join(f"{v:.1f}" for v in c["load_average_1m"]),
                         f"{c['pueued_cpu_seconds']:.1f}", watching, calls))  # fmt: skip
    print(table(rows))
    rows = []
    print("pueued CPU / watching CPU: in the adds' window (watching: the watcher or the loop, with the "
          "children it ran); load: 1-minute load average at the start of each round")  # fmt: skip

    print(f"\nstatus --json against `pueue status --json | jq -r FILTER > /dev/null`, median of {STATUS_RUNS}"
          " (peak RSS: the largest single process, max over the runs)")  # fmt: skip
    rows.append(("layout", "command", "wall s", "peak RSS MB", "RSS / file", "pueue status calls"))
    for layout, lf in f["layouts"].items():
        s = lf["status"]
        rows.append((layout, "pueue-watcher status --json", f"{s['ours']['wall_seconds_median']:.2f}",
                     f"{s['ours']['peak_rss_bytes'] / 1e6:.0f}", f"{s['peak_rss_over_file']:.2f}",
                     f"{s['ours']['pueue_status_calls']} in {STATUS_RUNS} runs"))  # fmt: skip
        rows.append((layout, "pueue status --json | jq", f"{s['baseline']['wall_seconds_median']:.2f}",
                     f"{s['baseline']['peak_rss_bytes'] / 1e6:.0f}",
                     f"{s['baseline']['peak_rss_bytes'] / s['state_bytes']:.2f}", "-"))  # fmt: skip
    print(table(rows))

    t = f["targets"]
    print("\ntargets:")
    for layout, lf in f["layouts"].items():
        w, s = lf["watcher"], lf["status"]
        over = lf["watcher_add_median_overhead"]
        print(f"  {layout}: add median under the watcher {100 * over:+.1f} % vs idle <= "
              f"{100 * t['watcher_add_median_overhead_at_most']:g} %: "
              f"{verdict(over <= t['watcher_add_median_overhead_at_most'])} "
              f"(seed loop: {100 * lf['seed_add_median_overhead']:+.1f} %)")  # fmt: skip
        calls = w["quiet_status_calls"] + w["adds_status_calls"]
        print(
            f"  {layout}: pueue status calls by the watcher after its first poll {calls} <= "
            f"{t['watcher_status_calls_at_most']}: {verdict(calls <= t['watcher_status_calls_at_most'])}"
        )
        print(f"  {layout}: status --json speed-up {s['speedup']:.1f}x >= {t['status_speedup_at_least']:g}x: "
              f"{verdict(s['speedup'] >= t['status_speedup_at_least'])}")  # fmt: skip
        print(f"  {layout}: status --json peak RSS {s['peak_rss_over_file']:.2f}x the file <= "
              f"{t['status_peak_rss_over_file_at_most']:g}x: "
              f"{verdict(s['peak_rss_over_file'] <= t['status_peak_rss_over_file_at_most'])}")  # fmt: skip
    print(f"whole scenario: {f['seconds']:.0f} s")


if __name__ == "__main__":
    run()
