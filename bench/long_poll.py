"""What the long poll costs (issue 16): 200 hosts waiting and nothing changing, side by side with the
watcher without it; and one host's waiting loop, side by side with what a one-second latency costs without
it.

**1. One host's waiting loop.** The poll session's script (``watcher/remote/session.py``) runs as the host
runs it, ``sh -c SESSION_SCRIPT``, on a pueue directory laid out by hand (a generated v4 state, a live
process named ``pueued``), and is asked for one wait of ``LOOP_SECONDS`` with nothing changing. Its CPU,
with every process it ran (getrusage of reaped children), as a percentage of one core, for each of its
three ways to wait: ``inotifywait``; the builtin ``[ -nt ]`` every 2 s (no inotifywait); ``stat`` once a
second (neither). The baseline: the poll's one-shot script (``watcher/remote/poll.py`` SCRIPT) run once a
second, what a one-second latency costs without a long poll. Target: under 0.2 % of a core.

**2. 200 hosts.** One sshd on loopback plays ``HOSTS`` hosts (``[[hosts]]`` entries to one port, each with its
own ``pueue_dir`` as above), behind a byte-counting proxy. The daemon (``python -m watcher run``) runs twice
on a fresh store, at ``poll_interval = 300s``: with the long poll (the default) and with ``long_poll = false``
(the adaptive schedule alone). After a warm-up (start, 200 connections, 200 first polls: until /metrics shows
every host polled, then 15 s), a measured window of ``WINDOW`` seconds: the daemon's CPU (utime + stime from
/proc), the host side's (sshd and everything below it: every session's shell and what it ran), and the bytes
through the proxy, per host per base interval (scaled from the window to 300 s). Targets: the daemon under 1 %
of a core, each host's share of the host side under 0.2 %, at most 4 KB per host per base interval. Then, with
the long poll, one host's state file is replaced as pueue saves it: the daemon's per-host poll counters (its
/metrics) show which hosts were polled in the next seconds; the target is that host alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import secrets
import select
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.common import fake_pueued, save, table
from bench.idle import cpu_seconds, stop_daemon, tree_cpu_seconds
from tests.faults.scenario import known_hosts_for
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import ssh_entry, write_config
from tests.harness.proxy import CountingProxy
from tests.harness.services import free_port
from tests.harness.sshd import ClientKeys, SSHServer
from tests.pueue_sim.scenario import generate_state, install
from watcher.config import HostConfig, Settings
from watcher.remote.poll import poll_argv, read_output
from watcher.remote.session import SESSION_END, session_argv, session_request

HOSTS = int(os.environ.get("PW_BENCH_LONG_POLL_HOSTS", "200"))
TASKS = 200
GROUPS = 4
LOOP_SECONDS = int(os.environ.get("PW_BENCH_LONG_POLL_LOOP", "30"))
WARMUP = float(os.environ.get("PW_BENCH_LONG_POLL_WARMUP", "15"))
WINDOW = float(os.environ.get("PW_BENCH_LONG_POLL_WINDOW", "90"))
INTERVAL = 300.0
CHANGE_SECONDS = 5.0
TARGETS = {"watcher_percent": 1.0, "host_loop_percent": 0.2, "wire_bytes_per_host_interval": 4096}
POLLS = re.compile(r'^pueue_watcher_poll_duration_seconds_count\{host="([^"]+)"\} ([0-9.e+]+)$', re.M)
UP = re.compile(r'^pueue_watcher_host_up\{host="([^"]+)"\} 1\.0$', re.M)


# ---------------------------------------------------------------------------------------------- 1. one loop


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def without_inotifywait(root: Path) -> str:
    """A PATH with everything of this one but inotifywait."""
    shadow = root / "no-inotify-bin"
    shadow.mkdir(exist_ok=True)
    for directory in os.environ["PATH"].split(os.pathsep):
        if os.path.isdir(directory):
            for entry in os.scandir(directory):
                if entry.name != "inotifywait" and not (shadow / entry.name).exists():
                    (shadow / entry.name).symlink_to(entry.path)
    return str(shadow)


def one_wait(host: HostConfig, env: Mapping[str, str], seconds: int) -> tuple[float, float, str]:
    """(CPU seconds, wall seconds, answer kind) of a session asked for one wait of ``seconds`` (after the
    request that learns the fingerprint), the session's start and end included."""
    before, began = children_cpu(), time.monotonic()
    proc = subprocess.Popen(session_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(env))
    assert proc.stdin is not None
    assert proc.stdout is not None
    kind = ""
    try:
        known = ""
        for wait in (0, seconds):
            token = secrets.token_hex(8)
            request = session_request(host, known, token, wait)
            assert request is not None
            proc.stdin.write(request)
            proc.stdin.flush()
            end, answer = SESSION_END + token.encode() + b"\n", bytearray()
            while not answer.endswith(end):
                ready, _, _ = select.select([proc.stdout], [], [], seconds + 30)
                chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
                if not chunk:
                    raise RuntimeError(f"the session gave no answer: {bytes(answer)[-300:]!r}")
                answer += chunk
            state = read_output(bytes(answer), b"", 0, pueue=host.pueue)
            known, kind = state.fingerprint, state.kind
    finally:
        proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()
    return children_cpu() - before, time.monotonic() - began, kind


def polls_each_second(host: HostConfig, env: Mapping[str, str], seconds: int) -> tuple[float, float, int]:
    """The baseline: the one-shot poll script, once a second (after a first that learns the fingerprint)."""
    first = subprocess.run(poll_argv(host, ""), env=dict(env), capture_output=True, check=True)
    known = read_output(first.stdout, first.stderr, 0, pueue=host.pueue).fingerprint
    before, began, n = children_cpu(), time.monotonic(), 0
    while time.monotonic() - began < seconds:
        subprocess.run(poll_argv(host, known), env=dict(env), capture_output=True, check=True)
        n += 1
        time.sleep(max(0.0, began + n - time.monotonic()))
    return children_cpu() - before, time.monotonic() - began, n


def loops(root: Path, pid: int, pueue: Path) -> dict[str, Any]:
    directory = root / "loop" / "pueue"
    directory.mkdir(parents=True)
    generate_state(directory, "v4", TASKS, GROUPS, seed=1, statuses={"Success": 1.0})
    (directory / "pueue.pid").write_text(str(pid))
    # As an SSH host: the one-shot baseline then reads the file's fingerprint, as it would over SSH.
    host = Settings(hosts=[{"name": "h", "address": "127.0.0.1", "pueue": str(pueue),
                            "pueue_dir": str(directory)}]).hosts[0]  # fmt: skip
    base = {"PATH": os.environ["PATH"], "HOME": str(root), "TMPDIR": str(root / "tmp")}
    (root / "tmp").mkdir()
    plain = base | {"PATH": without_inotifywait(root)}
    ways = {
        "inotifywait": base,
        "[ -nt ] every 2 s": plain,
        "stat every 1 s": plain | {"TMPDIR": str(root / "missing")},
    }
    figures: dict[str, Any] = {}
    if shutil.which("inotifywait") is None:
        print("inotifywait is not installed: its way is left out (./dev installs inotify-tools)")
        del ways["inotifywait"]
    for label, env in ways.items():
        print(f"  one wait of {LOOP_SECONDS} s: {label} ...", flush=True)
        # The session's start, its first request and its end, measured alone, are taken off: the wait's own.
        overhead = min(one_wait(host, env, 0)[0] for _ in range(3))
        cpu, wall, kind = one_wait(host, env, LOOP_SECONDS)
        figures[label] = {"cpu_seconds": cpu - overhead, "session_overhead_cpu_seconds": overhead,
                          "wall_seconds": wall, "percent": 100 * (cpu - overhead) / wall,
                          "answer": kind}  # fmt: skip
    print(f"  baseline: the one-shot poll once a second for {LOOP_SECONDS} s ...", flush=True)
    cpu, wall, n = polls_each_second(host, base, LOOP_SECONDS)
    figures["baseline: one-shot poll every 1 s"] = {"cpu_seconds": cpu, "wall_seconds": wall,
                                                    "percent": 100 * cpu / wall, "polls": n}  # fmt: skip
    return figures


# ---------------------------------------------------------------------------------------------- 2. 200 hosts


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        return str(answer.read().decode())


def poll_counts(port: int) -> dict[str, float]:
    """Each host's polls so far, failed ones included."""
    return {host: float(n) for host, n in POLLS.findall(scrape(port))}


def hosts_up(port: int) -> int:
    """How many hosts' last poll succeeded."""
    return len(UP.findall(scrape(port)))


def fleet_run(root: Path, server: SSHServer, proxy: CountingProxy, hosts: list[Mapping[str, Any]],
              key: str, long_poll: bool) -> dict[str, Any]:  # fmt: skip
    port = free_port()
    config = write_config(
        root / f"{key}.toml",
        hosts,
        watcher={"state_path": str(root / f"{key}.db"), "poll_interval": f"{INTERVAL:g}s",
                 "long_poll": long_poll},
        metrics={"listen": f"127.0.0.1:{port}"},
    )  # fmt: skip
    daemon = DaemonProcess(config, root / f"{key}.log")
    figures: dict[str, Any] = {"long_poll": long_poll}
    assert server.proc is not None
    try:
        daemon.start()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        began = time.monotonic()
        while True:  # the warm-up: every host polled successfully (so waiting), then WARMUP seconds more
            time.sleep(2)
            if daemon.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited:\n{daemon.log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                if hosts_up(port) >= len(hosts):
                    break
            if time.monotonic() - began > 900:
                raise RuntimeError("not every host was polled within 15 minutes")
        figures["seconds_until_every_host_polled"] = round(time.monotonic() - began, 1)
        time.sleep(WARMUP)
        polled = poll_counts(port)
        figures["polls_in_warmup"] = sum(polled.values())  # failed ones included: a login storm
        cpu0, host0 = cpu_seconds(pid), tree_cpu_seconds(server.proc.pid)
        proxy.reset()
        t0 = time.monotonic()
        time.sleep(WINDOW)
        wall = time.monotonic() - t0
        cpu, host_cpu, wire = cpu_seconds(pid) - cpu0, tree_cpu_seconds(server.proc.pid) - host0, proxy.total
        after = poll_counts(port)
        figures |= {
            "window_seconds": wall,
            "daemon_cpu_percent": 100 * cpu / wall,
            "host_side_cpu_percent_per_host": 100 * host_cpu / wall / len(hosts),
            "host_side_cpu_percent_total": 100 * host_cpu / wall,
            "wire_bytes": wire,
            "wire_bytes_per_host_interval": wire / len(hosts) * INTERVAL / wall,
            "polls_in_window": sum(after.values()) - sum(polled.values()),
        }
        if long_poll:
            changed = hosts[len(hosts) // 2]["name"]
            state = Path(hosts[len(hosts) // 2]["pueue_dir"]) / "state.json"
            temp = state.with_suffix(".partial")
            temp.write_bytes(state.read_bytes())
            before = poll_counts(port)
            changed_at = time.monotonic()
            os.replace(temp, state)  # as pueue saves its state
            time.sleep(CHANGE_SECONDS)
            now = poll_counts(port)
            figures["change"] = {
                "host": changed,
                "hosts_polled_after": sorted(h for h, n in now.items() if n > before.get(h, 0)),
                "seconds_watched": round(time.monotonic() - changed_at, 1),
                "log": [line for line in daemon.lines() if line.get("host") == changed][-8:],
            }
    finally:
        stop_daemon(daemon)
    return figures


def run() -> dict[str, Any]:
    started = time.monotonic()
    figures: dict[str, Any] = {"hosts": HOSTS, "tasks_per_host": TASKS, "window_seconds": WINDOW,
                               "poll_interval_seconds": INTERVAL, "targets": TARGETS}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="pw-bench-long-poll-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        pueued = fake_pueued(root / "fake-pueued")
        stack.callback(pueued.wait)
        stack.callback(pueued.kill)
        pueue_bin, _ = install(root / "bin", "v4")
        parts = os.environ.get("PW_BENCH_LONG_POLL_PARTS", "loops,long-poll,adaptive").split(",")
        if "loops" in parts:
            print("1. one host's waiting loop", flush=True)
            figures["loops"] = loops(root, pueued.pid, pueue_bin)
        keys = ClientKeys(root / "client")
        server = SSHServer(root / "sshd", keys, {})
        stack.callback(server.stop)
        server.start()
        proxy = CountingProxy(server.port).start()
        stack.callback(proxy.stop)
        known_hosts = known_hosts_for(server, proxy.port, root / "known_hosts")
        hosts: list[Mapping[str, Any]] = []
        for i in range(HOSTS):
            directory = root / "hosts" / f"h{i:03d}" / "pueue"
            directory.mkdir(parents=True)
            generate_state(directory, "v4", TASKS, GROUPS, seed=i, statuses={"Success": 1.0})
            (directory / "pueue.pid").write_text(str(pueued.pid))
            hosts.append(ssh_entry(f"h{i:03d}", server, None, port=proxy.port, known_hosts=str(known_hosts),
                                   pueue=str(pueue_bin), pueue_dir=str(directory)))  # fmt: skip
        figures["fleet"] = {}
        for key, long_poll in (("long-poll", True), ("adaptive", False)):
            if key not in parts:
                continue
            print(f"2. {HOSTS} hosts, {'long poll' if long_poll else 'long_poll = false'}: {WARMUP:g} s "
                  f"warm-up, {WINDOW:g} s measured ...", flush=True)  # fmt: skip
            figures["fleet"][key] = fleet_run(root, server, proxy, hosts, key, long_poll)
    figures["seconds"] = round(time.monotonic() - started, 1)
    report(figures)
    print(f"results: {save('long_poll', figures)}")
    return figures


def report(f: dict[str, Any]) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    target, cpu_target = TARGETS["host_loop_percent"], TARGETS["watcher_percent"]
    wire_target = TARGETS["wire_bytes_per_host_interval"]
    rows = [("one wait of a host's session", "CPU ms", "% of a core", f"target < {target:g} %")]
    for label, x in f["loops"].items():
        ok = verdict(x["percent"] < target) if not label.startswith("baseline") else "(baseline)"
        rows.append((label, f"{1000 * x['cpu_seconds']:.0f}", f"{x['percent']:.3f}", ok))
    print(table(rows))
    fleet = f["fleet"]
    lp, ad = fleet["long-poll"], fleet["adaptive"]
    rows = [
        (f"{f['hosts']} hosts, nothing changing", "long poll", "long_poll = false", "target"),
        ("s until every host was polled", str(lp["seconds_until_every_host_polled"]),
         str(ad["seconds_until_every_host_polled"]), ""),
        ("daemon CPU % of a core", f"{lp['daemon_cpu_percent']:.2f}", f"{ad['daemon_cpu_percent']:.2f}",
         f"< {cpu_target:g} %: {verdict(lp['daemon_cpu_percent'] < cpu_target)}"),
        ("host side CPU % per host", f"{lp['host_side_cpu_percent_per_host']:.3f}",
         f"{ad['host_side_cpu_percent_per_host']:.3f}",
         f"< {target:g} %: {verdict(lp['host_side_cpu_percent_per_host'] < target)}"),
        ("wire bytes per host per 300 s", f"{lp['wire_bytes_per_host_interval']:.0f}",
         f"{ad['wire_bytes_per_host_interval']:.0f}",
         f"<= {wire_target}: {verdict(lp['wire_bytes_per_host_interval'] <= wire_target)}"),
        ("polls in the window", str(int(lp["polls_in_window"])), str(int(ad["polls_in_window"])), ""),
    ]  # fmt: skip
    print(table(rows))
    change = lp["change"]
    alone = change["hosts_polled_after"] == [change["host"]]
    print(f"one host's state file replaced: hosts polled in the next {change['seconds_watched']} s: "
          f"{change['hosts_polled_after']} (that host alone: {verdict(alone)})")  # fmt: skip


if __name__ == "__main__":
    run()
