"""Detection latency of a group completion: from the end of the group's last task to the ``phase.completed``
event the daemon delivers.

One simulated pueue v4 host behind one real sshd on loopback, watched by the real daemon
(``python -m watcher run``). Each trial is a new phase of one group: one gated task is added and started,
the daemon records the phase as open, a random wait follows (stratified: each trial draws within its own slice
of the range, so that few trials cover it evenly), then the gate is released. The task's ``end``
comes from the host's state file (the host's clock is this machine's), the delivery time from the
``timestamp`` of the daemon's ``phase.completed`` log line for that phase.

- **adaptive** (the production settings): ``poll_interval = 300s``, ``fast_interval = 5s``. Target: median
  latency <= 10 s.
- **fixed 20 s** (the baseline, ``fast_interval = 0``): the wait before the release is uniform over the
  interval, so the latency is uniform over it too; mean ~ interval / 2. At the production 300 s the same
  baseline would average 150 s: that figure is the expectation interval / 2, not a measurement.
- **pueue wait**: the trigger the project considered instead, ``pueue wait -g GROUP`` (the simulator's client,
  run locally with the host's environment), in the same trials as the adaptive watcher: latency from the end
  to the client's exit. pueue's ``wait`` asks the daemon for its whole state every 2 s (the simulator does
  the same), so a long-lived ``wait`` per group loads the pueue daemon; the watcher never asks it.

The daemon is restarted for each trial: a daemon whose last poll found the group complete polls again only
after ``poll_interval``, so a task added to an idle group is first seen up to 300 s later. A restarted daemon
polls at once and sees the phase open; from then on it runs on its own schedule, which is what is measured.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import save, table
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import sim_env, ssh_entry, watcher, write_config
from tests.harness.sshd import ClientKeys, SSHServer
from tests.pueue_sim.scenario import SimHost
from tests.pueue_sim.state import task_times

GROUP = "btc-yearly"
HOST = "bigblack"
ADAPTIVE_TRIALS = 10
BASELINE_TRIALS = 5
BASELINE_INTERVAL = 20.0
PRODUCTION_INTERVAL = 300.0
ADAPTIVE_WAIT = (0.0, 8.0)  # seconds between "the daemon saw the phase open" and the end of its task
TARGET_MEDIAN = 10.0


@dataclass
class Trial:
    name: str
    phase: str
    end: datetime
    delivered: datetime
    wait: float
    pueue_wait_exit: datetime | None = None

    @property
    def latency(self) -> float:
        return (self.delivered - self.end).total_seconds()

    @property
    def pueue_wait_latency(self) -> float | None:
        if self.pueue_wait_exit is None:
            return None
        return (self.pueue_wait_exit - self.end).total_seconds()


@dataclass
class Bench:
    root: Path
    sim: SimHost
    server: SSHServer
    rng: random.Random
    gates: list[str] = field(default_factory=list)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    daemons: list[DaemonProcess] = field(default_factory=list)

    def config(self, label: str, poll_interval: float, fast_interval: float) -> Path:
        return write_config(
            self.root / f"{label}.toml",
            [ssh_entry(HOST, self.server, self.sim, groups=[GROUP])],
            watcher={
                "poll_interval": f"{poll_interval:g}s",
                "fast_interval": f"{fast_interval:g}s" if fast_interval else 0,
                "state_path": str(self.root / f"{label}.db"),
            },
            metrics={"listen": ""},
        )

    def cleanup(self) -> None:
        for daemon in self.daemons:
            daemon.stop()
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait()
        for name in self.gates:  # let every gate task end, so that the pueue daemon stops cleanly
            self.sim.finish(name)


def open_phase(config: Path, known: set[str]) -> str | None:
    """The id of an open phase of GROUP that is not in ``known`` (per ``history --json``)."""
    import json

    proc = watcher("history", "--json", "--group", GROUP, "-c", str(config))
    if proc.returncode != 0:
        return None
    for phase in json.loads(proc.stdout):
        if phase["status"] == "open" and phase["id"] not in known:
            return str(phase["id"])
    return None


def completion(daemon: DaemonProcess, phase: str) -> dict[str, Any] | None:
    for line in daemon.events("phase.completed"):
        if line.get("phase") == phase and line.get("group") == GROUP:
            return line
    return None


def trial(
    bench: Bench, daemon: DaemonProcess, name: str, wait_range: tuple[float, float], with_pueue_wait: bool
) -> Trial:
    sim = bench.sim
    bench.gates.append(name)
    task_id = sim.add_gated(name, group=GROUP, label=name)
    sim.wait_for_status(task_id, "Running")
    known = {p for p in _phases(daemon)}
    exits: list[float] = []
    waiter: threading.Thread | None = None
    if with_pueue_wait:
        proc = subprocess.Popen(
            [str(sim.pueue_bin), "wait", "-q", "-g", GROUP],
            env=sim.env, cwd=sim.work_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        bench.children.append(proc)

        def reap() -> None:
            proc.wait()
            exits.append(time.time())

        waiter = threading.Thread(target=reap, daemon=True)
        waiter.start()
    daemon.start()
    try:
        phase = daemon.wait_for(lambda: open_phase(daemon.config, known), timeout=60)
        wait = bench.rng.uniform(*wait_range)
        time.sleep(wait)
        sim.finish(name)
        task = sim.wait_for_status(task_id, "Done")
        end = datetime.fromisoformat(str(task_times(task)["end"]))
        line = daemon.wait_for(lambda: completion(daemon, phase), timeout=450)
        delivered = datetime.fromisoformat(line["timestamp"])
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            try:
                daemon.terminate(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.stop()
    result = Trial(name, phase, end, delivered, wait)
    if waiter is not None:
        waiter.join(timeout=10)
        if exits:
            result.pueue_wait_exit = datetime.fromtimestamp(exits[0], UTC)
    return result


def _phases(daemon: DaemonProcess) -> set[str]:
    import json

    proc = watcher("history", "--json", "-c", str(daemon.config))
    return {str(p["id"]) for p in json.loads(proc.stdout)} if proc.returncode == 0 else set()


def series(
    bench: Bench,
    label: str,
    poll: float,
    fast: float,
    trials: int,
    wait: tuple[float, float],
    pueue_wait: bool,
) -> list[Trial]:
    config = bench.config(label, poll, fast)
    daemon = DaemonProcess(config, bench.root / f"{label}.log")
    bench.daemons.append(daemon)
    done = []
    for i, stratum in enumerate(strata(bench.rng, wait, trials)):
        t = trial(bench, daemon, f"{label}-{i}", stratum, pueue_wait)
        extra = f", pueue wait {t.pueue_wait_latency:.2f} s" if t.pueue_wait_latency is not None else ""
        print(f"  {label} trial {i + 1}/{trials}: waited {t.wait:.1f} s, latency {t.latency:.2f} s{extra}",
              flush=True)  # fmt: skip
        done.append(t)
    return done


def strata(rng: random.Random, span: tuple[float, float], n: int) -> list[tuple[float, float]]:
    """``span`` cut into ``n`` equal slices, in random order: each trial waits a random time within its own
    slice, so that a few trials still cover the whole span evenly (the mean of 5 plain uniform draws strays
    far from the middle)."""
    width = (span[1] - span[0]) / n
    slices = [(span[0] + i * width, span[0] + (i + 1) * width) for i in range(n)]
    rng.shuffle(slices)
    return slices


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "trials": len(values),
        "min": min(values),
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "max": max(values),
        "values": [round(v, 3) for v in values],
    }


def run() -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pw-bench-latency-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        sim = SimHost(root / "sim", "v4")
        stack.callback(sim.close)
        sim.start_daemon()
        sim.pueue("group", "add", GROUP, "-p", "1", check=True)
        keys = ClientKeys(root / "client")
        server = SSHServer(root / "sshd", keys, sim_env(sim))
        stack.callback(server.stop)
        server.start()
        bench = Bench(root, sim, server, random.Random(20240501))
        stack.callback(bench.cleanup)

        print(f"adaptive: poll_interval {PRODUCTION_INTERVAL:g}s, fast_interval 5s; "
              f"{ADAPTIVE_TRIALS} trials, release after {ADAPTIVE_WAIT[0]:g}-{ADAPTIVE_WAIT[1]:g} s; "
              "pueue wait -g in the same trials", flush=True)  # fmt: skip
        adaptive = series(bench, "adaptive", PRODUCTION_INTERVAL, 5.0, ADAPTIVE_TRIALS, ADAPTIVE_WAIT, True)
        print(f"fixed: poll_interval {BASELINE_INTERVAL:g}s, fast_interval 0; {BASELINE_TRIALS} trials, "
              f"release after 0-{BASELINE_INTERVAL:g} s", flush=True)  # fmt: skip
        fixed = series(bench, "fixed", BASELINE_INTERVAL, 0, BASELINE_TRIALS, (0.0, BASELINE_INTERVAL), False)

    waits = [t.pueue_wait_latency for t in adaptive if t.pueue_wait_latency is not None]
    figures: dict[str, Any] = {
        "adaptive_300s_fast_5s": summary([t.latency for t in adaptive]),
        "fixed_20s_measured": summary([t.latency for t in fixed]),
        "fixed_300s_expected": {"mean": PRODUCTION_INTERVAL / 2, "min": 0.0, "max": PRODUCTION_INTERVAL,
                                "note": "not measured: uniform over the interval, mean = interval / 2"},
        "pueue_wait_g": summary(waits) | {
            "note": "pueue wait asks the pueue daemon for its whole state every 2 s (the simulator too)"
        },
        "targets": {"adaptive_median_at_most": TARGET_MEDIAN},
        "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip

    rows: list[tuple[str, ...]] = [("trigger", "trials", "min s", "median s", "mean s", "max s")]
    for label, key in (
        ("watcher, adaptive (300s / fast 5s)", "adaptive_300s_fast_5s"),
        ("watcher, fixed 20s (measured)", "fixed_20s_measured"),
        ("pueue wait -g (2 s polls)", "pueue_wait_g"),
    ):
        f = figures[key]
        rows.append((label, str(f["trials"]), f"{f['min']:.2f}", f"{f['median']:.2f}", f"{f['mean']:.2f}",
                     f"{f['max']:.2f}"))  # fmt: skip
    rows.append(("watcher, fixed 300s (expected)", "-", "0", "150", "150", "300"))
    print(table(rows))
    adaptive_median = figures["adaptive_300s_fast_5s"]["median"]
    verdict = "met" if adaptive_median <= TARGET_MEDIAN else "MISSED"
    fixed_mean = figures["fixed_20s_measured"]["mean"]
    print(f"adaptive median {adaptive_median:.2f} s (target <= {TARGET_MEDIAN:g} s: {verdict}); "
          f"fixed {BASELINE_INTERVAL:g} s mean {fixed_mean:.2f} s (expected ~ {BASELINE_INTERVAL / 2:g} s); "
          f"fixed {PRODUCTION_INTERVAL:g} s: expected mean {PRODUCTION_INTERVAL / 2:g} s "
          "(interval / 2, not measured)")  # fmt: skip
    print("pueue wait -g polls the pueue daemon for its full state every 2 s, i.e. it loads the daemon, "
          "which the watcher (state file, stat only) does not")  # fmt: skip
    print(f"results: {save('latency', figures)}")
    return figures
