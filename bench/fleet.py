"""A fleet of 200 hosts: one poll cycle (cold, unchanged, churned), a large changing host, and the daemon's
steady state over 50 hosts.

One sshd on loopback plays every host (as in bench/idle.py): a ``[[hosts]]`` entry per host, each with its own
``pueue_dir`` holding a generated v4 state (2,000 finished tasks in 8 groups, ~2.7 MB), and a ``pueue.pid``
naming one shared ``sleep`` process (the pueue daemon is "alive", so the watcher reads the state file).
A byte-counting proxy sits in front of sshd for parts 1-3, so the bytes are what crosses the network.

1. Fleet cycle: an in-process ``Fleet`` polls the 200 hosts once cold (connects and full reads), then twice
   with nothing changed: the first of these opens each host's long-lived poll session, the second is what
   every later cycle of the daemon costs. Wall time, bytes on the wire per host, and the CPU of this process
   in that cycle (getrusage delta, minus the proxy thread's CPU, which would not run on a real watcher).
   Baseline: the sequential loop users run today, ``ssh HOST "pueue status --json" | jq ...`` per host;
   here the remote command is ``cat DIR/state.json`` (the same JSON ``pueue status --json`` would print,
   without the simulator's start-up), piped into status_large's jq filter. It runs over the first
   BASELINE_SAMPLE hosts and is extrapolated linearly to all of them.
2. Churn: 10 % of each host's tasks change status (Success -> Failed, written to a temporary file and renamed
   over state.json, as pueue does), then one measured cycle on the same open connections.
3. Large host: the 53,000-task state (~74 MB) changes before every poll (two variants, renamed in turn); for
   each compression choice, the best of 3 polls, and the host CPU of the compressor on the same file.
4. Steady state: the real daemon (``python -m watcher run``) over 50 of those hosts at
   ``poll_interval = 10s``, nothing changing, for STEADY_SECONDS (``PW_BENCH_STEADY_SECONDS`` shortens it)
   after a warm-up: its CPU as a percentage of one core and its RSS sampled every 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shlex
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import best_of, fake_pueued, measure, save, table
from bench.idle import cpu_seconds, cycle_totals, rss_bytes, sessions, stop_daemon, tree_cpu_seconds
from bench.status_large import JQ_FILTER, large_state
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import ssh_entry, write_config
from tests.harness.proxy import CountingProxy
from tests.harness.sshd import ClientKeys, SSHServer
from tests.pueue_sim.generate import generate_state
from tests.pueue_sim.scenario import install
from watcher.config import HostConfig, Settings
from watcher.fleet import Fleet
from watcher.poll.poller import HostPoller, PollResult
from watcher.transport.ssh import SSHTransport

HOSTS = 200
TASKS = 2000
GROUPS = 8
CHURN = 0.10
BASELINE_SAMPLE = 20
LARGE_CYCLES = 3
CHOICES = ("zstd", "gzip", "ssh", "none")
# What each choice makes the host's CPU do ("ssh": sshd's zlib at its default level, approximated by gzip -6).
COMPRESSORS = {
    "zstd": "zstd -1 -q -c",
    "gzip": "gzip -1 -c",
    "ssh": "gzip -6 -c",
    "none": "cat",
}
STEADY_HOSTS = 50
STEADY_SECONDS = float(os.environ.get("PW_BENCH_STEADY_SECONDS", "600"))
STEADY_WARMUP = 15.0
STEADY_SAMPLE = 10.0
TARGETS = {
    "unchanged_cycle_wall_seconds_below": 5.0,
    "speedup_at_least": 20.0,
    "unchanged_bytes_per_host_at_most": 4096,
    "steady_cpu_percent_below": 2.0,
    "steady_rss_growth_bytes_below": 5_000_000,
}
TICK = os.sysconf("SC_CLK_TCK")
SUCCESS = b'"result":"Success"'
FAILED = b'"result":{"Failed":1}'


def thread_cpu_seconds(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def replace_atomically(path: Path, data: bytes) -> None:
    temp = path.with_name(path.name + ".partial")
    temp.write_bytes(data)
    os.replace(temp, path)


def churn(directory: Path, fraction: float = CHURN) -> int:
    """Turn ``fraction`` of the tasks from Success to Failed (the first ones), written as pueue does."""
    state = directory / "state.json"
    data = state.read_bytes()
    changed = int(data.count(SUCCESS) * fraction)
    replace_atomically(state, data.replace(SUCCESS, FAILED, changed))
    return changed


# -- 1 and 2: one cycle of the whole fleet -------------------------------------------------------------------


async def measured_cycle(
    fleet: Fleet, proxy: CountingProxy, server: SSHServer, proxy_thread: int
) -> dict[str, Any]:
    assert server.proc is not None
    await asyncio.sleep(0.5)  # let the previous cycle's stragglers (channel close, keepalives) pass
    proxy.reset()
    host_before = tree_cpu_seconds(server.proc.pid)
    proxy_before = thread_cpu_seconds(proxy_thread)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    results = await fleet.poll()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    process_cpu = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)
    proxy_cpu = thread_cpu_seconds(proxy_thread) - proxy_before
    await asyncio.sleep(0.5)  # the last bytes of the cycle through the proxy
    host_cpu = tree_cpu_seconds(server.proc.pid) - host_before
    return summary(results, wall, process_cpu, proxy_cpu, host_cpu, proxy)


def summary(
    results: list[PollResult],
    wall: float,
    process_cpu: float,
    proxy_cpu: float,
    host_cpu: float,
    proxy: CountingProxy,
) -> dict[str, Any]:
    durations = sorted(r.duration for r in results)
    sources: dict[str, int] = {}
    for r in results:
        key = r.source if r.ok else f"error: {r.reason}"
        sources[str(key)] = sources.get(str(key), 0) + 1
    errors = [r.error for r in results if not r.ok]
    return {
        "wall_seconds": wall,
        "cpu_seconds": process_cpu - proxy_cpu,
        "process_cpu_seconds_with_proxy": process_cpu,
        "proxy_thread_cpu_seconds": proxy_cpu,
        "host_side_cpu_seconds": host_cpu,
        "wire_bytes": proxy.total,
        "wire_bytes_up": proxy.upstream_bytes,
        "wire_bytes_down": proxy.downstream_bytes,
        "wire_bytes_per_host": proxy.total / len(results),
        "poll_seconds_median": statistics.median(durations),
        "poll_seconds_max": durations[-1],
        "sources": sources,
        "first_errors": errors[:3],
    }


async def fleet_cycles(
    settings: Settings,
    proxy: CountingProxy,
    server: SSHServer,
    change: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    assert proxy._thread is not None
    assert proxy._thread.native_id is not None
    tid = proxy._thread.native_id
    fleet = Fleet(settings)
    try:
        cold = await measured_cycle(fleet, proxy, server, tid)
        opening = await measured_cycle(fleet, proxy, server, tid)  # opens each host's poll session
        unchanged = await measured_cycle(fleet, proxy, server, tid)  # every later cycle, as in the daemon
        changed = change()
        churned = await measured_cycle(fleet, proxy, server, tid)
        floor = await empty_sessions(next(iter(fleet.pollers.values())), server)
    finally:
        await fleet.close()
    return {
        "cold": cold,
        "unchanged_first": opening,
        "unchanged": unchanged,
        "churn": churned | changed,
        "empty_session": floor,
    }


async def empty_sessions(poller: HostPoller, server: SSHServer, n: int = 20) -> dict[str, float]:
    """What a session that runs `true` costs the host (sshd, the login shell and its startup files), on an
    open connection: the part of every poll that is not the watcher's script."""
    assert server.proc is not None
    before = tree_cpu_seconds(server.proc.pid)
    started = time.perf_counter()
    for _ in range(n):
        await poller.transport.run(["true"], timeout=30)
    wall = time.perf_counter() - started
    return {"host_cpu_seconds": (tree_cpu_seconds(server.proc.pid) - before) / n, "wall_seconds": wall / n}


def baseline(server: SSHServer, proxy: CountingProxy, directories: list[Path]) -> dict[str, Any]:
    """The sequential ssh + jq loop over ``directories``, through the same proxy."""
    ssh = (
        f"ssh -p {proxy.port} -i {shlex.quote(str(server.keys.identity))} -o StrictHostKeyChecking=no "
        f"-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes {server.user}@127.0.0.1"
    )
    lines = [
        f"{ssh} {shlex.quote('cat ' + shlex.quote(str(d / 'state.json')))} | jq -r {shlex.quote(JQ_FILTER)} "
        "> /dev/null || exit 1"
        for d in directories
    ]
    proxy.reset()
    run_ = measure(["sh", "-c", "\n".join(lines)])
    assert run_.returncode == 0, run_
    time.sleep(0.3)
    return run_.row() | {
        "hosts_run": len(directories),
        "wire_bytes_per_host": proxy.total / len(directories),
        "seconds_per_host": run_.wall_seconds / len(directories),
        "local_cpu_seconds_per_host": run_.cpu_seconds / len(directories),
    }


# -- 3: the large, changing host -----------------------------------------------------------------------------


async def large_polls(host: HostConfig, proxy: CountingProxy, variants: list[bytes], state: Path) -> dict:
    transport = SSHTransport(host, connect_timeout=15, keepalive=30)
    poller = HostPoller(host, transport, timeout=120)
    cycles = []
    try:
        first = await poller.poll()  # connect + full read
        assert first.ok, first.error
        for i in range(LARGE_CYCLES):
            replace_atomically(state, variants[(i + 1) % len(variants)])
            await asyncio.sleep(0.2)
            proxy.reset()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            result = await poller.poll()
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
            await asyncio.sleep(0.2)
            assert result.ok, result.error
            assert result.source == "state", result
            cycles.append({
                "wall_seconds": wall,
                "wire_bytes": proxy.total,
                "process_cpu_seconds_with_proxy": (after.ru_utime + after.ru_stime)
                - (usage.ru_utime + usage.ru_stime),
            })  # fmt: skip
    finally:
        await poller.close()
    best = min(cycles, key=lambda c: c["wall_seconds"])
    return best | {"cycles": cycles}


def large_host(root: Path, server: SSHServer, proxy: CountingProxy, pueue: Path, pid: int) -> dict:
    directory = root / "large" / "pueue"
    directory.mkdir(parents=True)
    original = (large_state() / "state.json").read_bytes()
    variants = [original, original.replace(SUCCESS, FAILED, original.count(SUCCESS) // 10)]
    state = directory / "state.json"
    replace_atomically(state, variants[0])
    (directory / "pueue.pid").write_text(str(pid))
    figures: dict[str, Any] = {"state_bytes": len(original), "choices": {}}
    for choice in CHOICES:
        host = HostConfig(
            name="large",
            address="127.0.0.1",
            port=proxy.port,
            user=server.user,
            identity_file=str(server.keys.identity),
            known_hosts="none",  # the proxy's port differs from the key's entry; bench only
            pueue=str(pueue),
            pueue_dir=str(directory),
            compression=choice,  # type: ignore[arg-type]
        )
        print(f"  large host, {choice} ...", flush=True)
        figures["choices"][choice] = asyncio.run(large_polls(host, proxy, variants, state))
    for choice, command in COMPRESSORS.items():
        run_ = best_of(3, ["sh", "-c", f'{command} "$0" > /dev/null', str(state)])
        figures["choices"][choice]["host_compressor_cpu_seconds"] = run_.cpu_seconds
        figures["choices"][choice]["host_compressor_wall_seconds"] = run_.wall_seconds
    return figures


# -- 4: the daemon's steady state ----------------------------------------------------------------------------


def slope_per_minute(times: list[float], values: list[int]) -> float:
    if len(times) < 2:
        return 0.0
    mt, mv = statistics.fmean(times), statistics.fmean(values)
    var = sum((t - mt) ** 2 for t in times)
    return 60 * sum((t - mt) * (v - mv) for t, v in zip(times, values, strict=True)) / var


def steady_state(root: Path, server: SSHServer, hosts: list[Mapping[str, Any]]) -> dict[str, Any]:
    watcher = {"state_path": str(root / "steady.db"), "poll_interval": "10s"}
    config = write_config(root / "steady.toml", hosts, watcher=watcher, metrics={"listen": ""})
    daemon = DaemonProcess(config, root / "steady.log")
    try:
        daemon.start()
        assert daemon.proc is not None
        assert server.proc is not None
        pid = daemon.proc.pid
        time.sleep(STEADY_WARMUP)
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited:\n{daemon.log.read_text()[-3000:]}")
        cpu0 = cpu_seconds(pid)
        host0 = tree_cpu_seconds(server.proc.pid)
        sessions0 = sessions(server)
        window_start = datetime.now(UTC)
        t0 = time.monotonic()
        times, rss = [0.0], [rss_bytes(pid)]
        for i in range(1, int(STEADY_SECONDS / STEADY_SAMPLE) + 1):
            time.sleep(max(0.0, t0 + i * STEADY_SAMPLE - time.monotonic()))
            times.append(time.monotonic() - t0)
            rss.append(rss_bytes(pid))
        cpu = cpu_seconds(pid) - cpu0
        host_cpu = tree_cpu_seconds(server.proc.pid) - host0
        wall = time.monotonic() - t0
        window_end = datetime.now(UTC)
        polls = sessions(server) - sessions0
    finally:
        stop_daemon(daemon)
    lines = daemon.lines()
    _, totals = cycle_totals(lines, window_start, window_end)
    return {
        "hosts": len(hosts),
        "window_seconds": wall,
        "cpu_seconds": cpu,
        "cpu_percent_of_one_core": 100 * cpu / wall,
        "cpu_ms_per_poll": 1000 * cpu / totals["polls"] if totals.get("polls") else None,
        "host_side_cpu_seconds": host_cpu,
        "sshd_sessions_in_window": polls,
        "cycle_totals": totals,
        "rss_bytes": {"first": rss[0], "last": rss[-1], "max": max(rss), "samples": rss},
        "rss_growth_bytes": rss[-1] - rss[0],
        "rss_slope_bytes_per_minute": slope_per_minute(times, rss),
        "host_failing_lines": sum(1 for line in lines if line.get("event") == "host.failing"),
    }


# -- the scenario --------------------------------------------------------------------------------------------


def run() -> dict[str, Any]:
    started = time.monotonic()
    figures: dict[str, Any] = {
        "hosts": HOSTS,
        "tasks_per_host": TASKS,
        "groups_per_host": GROUPS,
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="pw-bench-fleet-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        pueue_daemon = fake_pueued(root / "fake-pueued")
        stack.callback(pueue_daemon.wait)
        stack.callback(pueue_daemon.kill)
        pueue_bin, _ = install(root / "bin", "v4")
        keys = ClientKeys(root / "client")
        server = SSHServer(root / "sshd", keys, {})
        stack.callback(server.stop)
        stack.callback(server.drop_connections)  # the listener and every session it forked
        server.start()
        proxy = CountingProxy(server.port).start()

        def stop_proxy() -> None:
            if proxy._loop is not None and not proxy._loop.is_closed():
                proxy.stop()

        stack.callback(stop_proxy)

        print(f"generating {HOSTS} states of {TASKS} tasks ...", flush=True)
        directories: list[Path] = []
        for i in range(HOSTS):
            directory = root / "hosts" / f"h{i:03d}" / "pueue"
            directory.mkdir(parents=True)
            generate_state(directory, "v4", TASKS, GROUPS, seed=i, statuses={"Success": 1.0})
            (directory / "pueue.pid").write_text(str(pueue_daemon.pid))
            directories.append(directory)
        figures["state_bytes_per_host"] = sum((d / "state.json").stat().st_size for d in directories) // HOSTS
        figures["setup_seconds"] = time.monotonic() - started

        settings = Settings(
            hosts=[
                HostConfig(
                    name=f"h{i:03d}",
                    address="127.0.0.1",
                    port=proxy.port,
                    user=server.user,
                    identity_file=str(keys.identity),
                    known_hosts="none",  # the proxy's port differs from the key's entry; bench only
                    pueue=str(pueue_bin),
                    pueue_dir=str(d),
                )
                for i, d in enumerate(directories)
            ]
        )
        figures["max_concurrency"] = settings.watcher.max_concurrency

        def change() -> dict[str, Any]:
            t = time.perf_counter()
            changed = sum(churn(d) for d in directories)
            return {"tasks_changed_per_host": changed / HOSTS, "rewrite_seconds": time.perf_counter() - t}

        print("fleet cycles: cold, unchanged, churn ...", flush=True)
        figures |= asyncio.run(fleet_cycles(settings, proxy, server, change))

        print(f"baseline: ssh + jq over the first {BASELINE_SAMPLE} hosts ...", flush=True)
        base = baseline(server, proxy, directories[:BASELINE_SAMPLE])
        base["extrapolated_wall_seconds"] = base["seconds_per_host"] * HOSTS
        figures["baseline"] = base
        for key in ("unchanged", "churn", "cold"):
            figures[f"speedup_{key}"] = base["extrapolated_wall_seconds"] / figures[key]["wall_seconds"]

        print("large host (53,000 tasks, changing every cycle) ...", flush=True)
        figures["large"] = large_host(root, server, proxy, pueue_bin, pueue_daemon.pid)
        stop_proxy()

        steady_hosts = [
            ssh_entry(f"h{i:03d}", server, None, pueue=str(pueue_bin), pueue_dir=str(directories[i]))
            for i in range(STEADY_HOSTS)
        ]
        print(f"steady state: daemon over {STEADY_HOSTS} hosts at 10s, {STEADY_WARMUP:g} s warm-up, "
              f"{STEADY_SECONDS:g} s measured ...", flush=True)  # fmt: skip
        figures["steady"] = steady_state(root, server, steady_hosts)
        figures["steady"]["seconds_configured"] = STEADY_SECONDS
    figures["targets"] = TARGETS
    figures["seconds"] = time.monotonic() - started
    report(figures)
    print(f"results: {save('fleet', figures)}")
    return figures


def report(f: dict[str, Any]) -> None:
    base = f["baseline"]
    print(f"\n{HOSTS} hosts on one sshd behind a counting proxy, {TASKS} finished tasks in {GROUPS} groups "
          f"each ({f['state_bytes_per_host'] / 1e6:.1f} MB state); {f['cpus']} cores; "
          f"max_concurrency {f['max_concurrency']}")  # fmt: skip
    rows = [(
        "fleet cycle", "wall s", "KB/host", "our CPU s", "proxy CPU s", "host CPU s", "poll s med/max",
        "sources",
    )]  # fmt: skip
    for key in ("cold", "unchanged_first", "unchanged", "churn"):
        c = f[key]
        rows.append((
            f"ours, {key}",
            f"{c['wall_seconds']:.2f}",
            f"{c['wire_bytes_per_host'] / 1e3:.2f}",
            f"{c['cpu_seconds']:.2f}",
            f"{c['proxy_thread_cpu_seconds']:.2f}",
            f"{c['host_side_cpu_seconds']:.2f}",
            f"{c['poll_seconds_median']:.2f}/{c['poll_seconds_max']:.2f}",
            " ".join(f"{k}={v}" for k, v in c["sources"].items()),
        ))  # fmt: skip
    rows.append((
        f"baseline ssh+jq (x{HOSTS // base['hosts_run']})",
        f"{base['extrapolated_wall_seconds']:.2f}",
        f"{base['wire_bytes_per_host'] / 1e3:.1f}",
        f"{base['cpu_seconds'] * HOSTS / base['hosts_run']:.2f}",
        "-", "-", f"{base['seconds_per_host']:.3f}/-", "-",
    ))  # fmt: skip
    print(table(rows))
    print(f"baseline: sequential `ssh ... \"cat DIR/state.json\" | jq -r FILTER` (cat stands for "
          f"`pueue status --json`: the same JSON); run over the first {base['hosts_run']} hosts "
          f"({base['wall_seconds']:.2f} s) and extrapolated linearly to {HOSTS}")  # fmt: skip
    print(f"churn: {f['churn']['tasks_changed_per_host']:.0f} tasks per host changed status "
          f"(rewrite + rename took {f['churn']['rewrite_seconds']:.1f} s, not in the cycle)")  # fmt: skip
    print("our CPU = this process's getrusage delta minus the proxy thread; host CPU = sshd and all its "
          "sessions ran (shell, stat, zstd, ...)")  # fmt: skip
    print("unchanged_first: the first unchanged poll of a host opens its long-lived poll session (an SSH "
          "session and a login shell); unchanged: every later cycle, answered by that session")  # fmt: skip
    e, u = f["empty_session"], f["unchanged"]
    per_poll = u["host_side_cpu_seconds"] / HOSTS
    first = f["unchanged_first"]["host_side_cpu_seconds"] / HOSTS
    print(f"host side CPU per poll: {1000 * per_poll:.1f} ms answered by the open session, "
          f"{1000 * first:.0f} ms when the poll opens a new one (an empty session, `true`, costs "
          f"{1000 * e['host_cpu_seconds']:.0f} ms: sshd + login shell startup files); this process: "
          f"{1000 * u['cpu_seconds'] / HOSTS:.1f} ms CPU per poll")  # fmt: skip

    large = f["large"]
    print(f"\nlarge host: {large['state_bytes'] / 1e6:.1f} MB state, changed before every poll; best of "
          f"{LARGE_CYCLES}")  # fmt: skip
    rows = [("compression", "poll wall s", "wire MB", "our CPU s (incl. proxy)", "host compressor CPU s")]
    for choice, c in large["choices"].items():
        rows.append((
            choice,
            f"{c['wall_seconds']:.2f}",
            f"{c['wire_bytes'] / 1e6:.2f}",
            f"{c['process_cpu_seconds_with_proxy']:.2f}",
            f"{c['host_compressor_cpu_seconds']:.2f}",
        ))  # fmt: skip
    print(table(rows))
    print("host compressor CPU: the same command run locally on the file (ssh: gzip -6 approximates "
          "sshd's zlib; none: cat)")  # fmt: skip

    s = f["steady"]
    r = s["rss_bytes"]
    print(f"\nsteady state: daemon over {s['hosts']} hosts, poll_interval 10s, nothing changing, "
          f"{s['window_seconds']:.0f} s window after {STEADY_WARMUP:g} s warm-up")  # fmt: skip
    per_poll = "-" if s["cpu_ms_per_poll"] is None else f"{s['cpu_ms_per_poll']:.1f}"
    rows = [
        ("daemon CPU s / % of one core", f"{s['cpu_seconds']:.2f} / {s['cpu_percent_of_one_core']:.2f} %"),
        ("daemon CPU ms per poll", per_poll),
        ("new sshd sessions in the window", str(s["sshd_sessions_in_window"])),
        ("cycle totals", " ".join(f"{k}={v}" for k, v in s["cycle_totals"].items())),
        ("RSS MB first/last/max", f"{r['first'] / 1e6:.1f}/{r['last'] / 1e6:.1f}/{r['max'] / 1e6:.1f}"),
        ("RSS growth MB / slope MB per min",
         f"{s['rss_growth_bytes'] / 1e6:.2f} / {s['rss_slope_bytes_per_minute'] / 1e6:.3f}"),
        ("host side CPU s", f"{s['host_side_cpu_seconds']:.2f}"),
    ]  # fmt: skip
    print(table(rows))
    if s["window_seconds"] < 600:
        projected = s["rss_slope_bytes_per_minute"] * 10 / 1e6
        print(f"(window shortened by PW_BENCH_STEADY_SECONDS; slope x 10 min: {projected:.2f} MB)")

    t = f["targets"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    u = f["unchanged"]
    growth = max(s["rss_growth_bytes"], s["rss_slope_bytes_per_minute"] * 10)
    print("\ntargets:")
    print(f"  unchanged cycle wall {u['wall_seconds']:.2f} s < "
          f"{t['unchanged_cycle_wall_seconds_below']:g} s: "
          f"{verdict(u['wall_seconds'] < t['unchanged_cycle_wall_seconds_below'])}")  # fmt: skip
    print(f"  speed-up vs baseline {f['speedup_unchanged']:.0f}x unchanged / "
          f"{f['speedup_churn']:.0f}x churn / {f['speedup_cold']:.0f}x cold >= {t['speedup_at_least']:g}x: "
          f"{verdict(f['speedup_unchanged'] >= t['speedup_at_least'])} (unchanged)")  # fmt: skip
    print(f"  unchanged bytes per host {u['wire_bytes_per_host']:.0f} B <= "
          f"{t['unchanged_bytes_per_host_at_most']} B: "
          f"{verdict(u['wire_bytes_per_host'] <= t['unchanged_bytes_per_host_at_most'])}")  # fmt: skip
    print(f"  steady CPU {s['cpu_percent_of_one_core']:.2f} % < {t['steady_cpu_percent_below']:g} %: "
          f"{verdict(s['cpu_percent_of_one_core'] < t['steady_cpu_percent_below'])}")  # fmt: skip
    print(f"  steady RSS growth (max of measured, slope x 10 min) {growth / 1e6:.2f} MB < "
          f"{t['steady_rss_growth_bytes_below'] / 1e6:g} MB: "
          f"{verdict(growth < t['steady_rss_growth_bytes_below'])}")  # fmt: skip
    print(f"whole scenario: {f['seconds']:.0f} s")
