"""The daemon's own CPU and memory while it watches 50 hosts whose queues do not change.

One sshd on loopback plays 50 hosts: 50 ``[[hosts]]`` entries to the same port, each with its own
``pueue_dir`` holding a generated v4 state of 200 finished tasks in 4 groups, and a ``pueue.pid`` naming
one shared ``sleep`` process (the pueue daemon is "alive", so the watcher reads the state file and, after the
first poll, finds it unchanged). The daemon (``python -m watcher run``) runs twice, each time on a fresh
store:

- the production defaults (``poll_interval = 300s``): after the first polls of every host nothing is polled
  again within the window, so this is the cost of the idle loop and of 50 SSH connections' keepalives;
- ``poll_interval = 10s``: 50 unchanged polls every 10 s.

Each run has a 15 s warm-up (start-up, 50 connections, 50 full polls), then a 90 s measured window: the
daemon's CPU (utime + stime from /proc/PID/stat) as a percentage of one core, and its RSS (VmRSS) sampled
every 5 s. Target: below 1 % of one core. The polls are counted twice: from the daemon's per-interval
``cycle`` lines inside the window, and from the sessions sshd started (``Starting session`` in its log).
The host side's CPU (sshd's processes and whatever each session ran, reaped children included) is reported
too; it includes the login shell's startup files, which sshd runs for every command.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import fake_pueued, save, table
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import ssh_entry, write_config
from tests.harness.sshd import ClientKeys, SSHServer
from tests.pueue_sim.scenario import generate_state, install

HOSTS = 50
TASKS = 200
GROUPS = 4
WARMUP = 15.0
WINDOW = 90.0
SAMPLE = 5.0
TARGET_PERCENT = 1.0
RUNS = (("defaults (300s)", "default", None), ("poll_interval 10s", "10s", "10s"))
TICK = os.sysconf("SC_CLK_TCK")
SESSION = re.compile(rb"Starting session: command")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu_seconds(root: int) -> float:
    """CPU of ``root`` and every process below it, those they have reaped included (utime + stime + cutime +
    cstime): for sshd, the connections' processes and the shells and commands each poll ran."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        times[int(entry.name)] = sum(int(f) for f in fields[11:15]) / TICK
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo += children.get(pid, [])
    return total


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def sessions(server: SSHServer) -> int:
    """How many sessions (one per poll) sshd has started so far."""
    log = server.root / "sshd.log"
    return len(SESSION.findall(log.read_bytes())) if log.exists() else 0


def measure(
    root: Path, server: SSHServer, hosts: list[Mapping[str, Any]], key: str, interval: str | None
) -> dict[str, Any]:
    watcher: dict[str, Any] = {"state_path": str(root / f"{key}.db")}
    if interval is not None:
        watcher["poll_interval"] = interval
    config = write_config(root / f"{key}.toml", hosts, watcher=watcher, metrics={"listen": ""})
    daemon = DaemonProcess(config, root / f"{key}.log")
    try:
        daemon.start()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        began = time.monotonic()
        time.sleep(WARMUP)
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited:\n{daemon.log.read_text()[-3000:]}")
        warmup_cpu = cpu_seconds(pid)
        assert server.proc is not None
        host_before = tree_cpu_seconds(server.proc.pid)
        sessions_before = sessions(server)
        window_start = datetime.now(UTC)
        t0 = time.monotonic()
        rss = [rss_bytes(pid)]
        for i in range(1, int(WINDOW / SAMPLE) + 1):
            time.sleep(max(0.0, t0 + i * SAMPLE - time.monotonic()))
            rss.append(rss_bytes(pid))
        cpu = cpu_seconds(pid) - warmup_cpu
        host_cpu = tree_cpu_seconds(server.proc.pid) - host_before
        wall = time.monotonic() - t0
        window_end = datetime.now(UTC)
        sessions_in_window = sessions(server) - sessions_before
        warmup_wall = t0 - began
    finally:
        stop_daemon(daemon)

    lines = daemon.lines()
    cycles, counted = cycle_totals(lines, window_start, window_end)
    seen = {line.get("host") for line in lines if line.get("event") == "phase.recorded"}
    failing = [line for line in lines if line.get("event") == "host.failing"]
    return {
        "poll_interval": interval or "300s (default)",
        "warmup_seconds": round(warmup_wall, 1),
        "warmup_cpu_seconds": warmup_cpu,
        "window_seconds": round(wall, 1),
        "cpu_seconds": cpu,
        "cpu_percent_of_one_core": 100 * cpu / wall,
        "cpu_ms_per_poll": 1000 * cpu / sessions_in_window if sessions_in_window else None,
        "host_side_cpu_seconds": host_cpu,
        "host_side_cpu_ms_per_poll": 1000 * host_cpu / sessions_in_window if sessions_in_window else None,
        "rss_bytes": {"first": rss[0], "last": rss[-1], "max": max(rss), "samples": rss},
        "cycle_lines_in_window": len(cycles),
        "cycle_totals": counted,
        "sshd_sessions_in_window": sessions_in_window,
        "hosts_seen": len(seen - {None}),
        "host_failing_lines": len(failing),
        "log_lines": len(lines),
    }


def run() -> dict[str, Any]:
    started = time.monotonic()
    figures: dict[str, Any] = {"hosts": HOSTS, "tasks_per_host": TASKS, "groups_per_host": GROUPS, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="pw-bench-idle-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        pueue_daemon = fake_pueued(root / "fake-pueued")
        stack.callback(pueue_daemon.wait)
        stack.callback(pueue_daemon.kill)
        pueue_bin, _ = install(root / "bin", "v4")
        keys = ClientKeys(root / "client")
        server = SSHServer(root / "sshd", keys, {})
        stack.callback(server.stop)
        server.start()
        hosts: list[Mapping[str, Any]] = []
        state_bytes = 0
        for i in range(HOSTS):
            directory = root / "hosts" / f"h{i:02d}" / "pueue"
            directory.mkdir(parents=True)
            generate_state(directory, "v4", TASKS, GROUPS, seed=i, statuses={"Success": 1.0})
            (directory / "pueue.pid").write_text(str(pueue_daemon.pid))
            state_bytes += (directory / "state.json").stat().st_size
            hosts.append(ssh_entry(f"h{i:02d}", server, None, pueue=str(pueue_bin), pueue_dir=str(directory)))
        figures["state_bytes_per_host"] = state_bytes // HOSTS
        for label, key, interval in RUNS:
            print(f"{label}: {WARMUP:g} s warm-up, {WINDOW:g} s measured ...", flush=True)
            figures["runs"][key] = measure(root, server, hosts, key, interval)
    figures["targets"] = {"cpu_percent_of_one_core_below": TARGET_PERCENT}
    figures["seconds"] = round(time.monotonic() - started, 1)

    per_host = figures["state_bytes_per_host"] / 1e3
    print(f"{HOSTS} hosts on one sshd, {TASKS} finished tasks each ({per_host:.0f} KB state); "
          f"{WINDOW:g} s window after {WARMUP:g} s warm-up")  # fmt: skip
    runs = [figures["runs"][key] for _, key, _ in RUNS]

    def per_poll(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    def polls(f: dict[str, Any]) -> str:
        return str(f["cycle_totals"]["polls"]) if f["cycle_lines_in_window"] else "- (no cycle line)"

    rows = [
        ("", *(label for label, _, _ in RUNS)),
        ("daemon CPU s in window", *(f"{f['cpu_seconds']:.2f}" for f in runs)),
        ("daemon CPU % of one core", *(f"{f['cpu_percent_of_one_core']:.2f}" for f in runs)),
        ("daemon CPU ms per poll", *(per_poll(f["cpu_ms_per_poll"]) for f in runs)),
        ("RSS MB first/last/max", *(
            "{:.0f}/{:.0f}/{:.0f}".format(*(f["rss_bytes"][k] / 1e6 for k in ("first", "last", "max")))
            for f in runs
        )),
        ("polls (cycle lines)", *(polls(f) for f in runs)),
        ("  unchanged / failed", *(
            f"{f['cycle_totals']['unchanged']} / {f['cycle_totals']['failed']}" for f in runs
        )),
        ("  wire KB", *(f"{f['cycle_totals']['wire_bytes'] / 1e3:.0f}" for f in runs)),
        ("polls (sshd sessions)", *(str(f["sshd_sessions_in_window"]) for f in runs)),
        ("host side CPU s (sshd, sh)", *(f"{f['host_side_cpu_seconds']:.2f}" for f in runs)),
        ("host side CPU ms per poll", *(per_poll(f["host_side_cpu_ms_per_poll"]) for f in runs)),
        ("warm-up: daemon CPU s", *(f"{f['warmup_cpu_seconds']:.2f}" for f in runs)),
    ]  # fmt: skip
    print(table(rows))
    for label, key, _ in RUNS:
        f = figures["runs"][key]
        verdict = "met" if f["cpu_percent_of_one_core"] < TARGET_PERCENT else "MISSED"
        print(f"{label}: {f['cpu_percent_of_one_core']:.2f} % of one core (target < {TARGET_PERCENT:g} %: "
              f"{verdict}); {f['hosts_seen']}/{HOSTS} hosts seen, "
              f"{f['host_failing_lines']} host.failing")  # fmt: skip
    print("host side: sshd and all that each poll's session runs, the login shell's startup files included "
          "(bash reads ~/.bashrc for ssh commands)")  # fmt: skip
    print(f"results: {save('idle', figures)}")
    return figures


def stop_daemon(daemon: DaemonProcess) -> None:
    """SIGTERM (a clean stop, so that its last lines are written), SIGKILL if it does not go."""
    if daemon.proc is not None and daemon.proc.poll() is None:
        try:
            daemon.terminate(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.stop()
    daemon.stop()


def cycle_totals(
    lines: list[dict[str, Any]], start: datetime, end: datetime
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The daemon's `cycle` summary lines inside [start, end], and their summed counters."""
    cycles = [
        line
        for line in lines
        if line.get("event") == "cycle" and start <= datetime.fromisoformat(line["timestamp"]) <= end
    ]
    keys = ("polls", "ok", "failed", "unchanged", "wire_bytes")
    return cycles, {k: sum(c.get(k, 0) for c in cycles) for k in keys}
