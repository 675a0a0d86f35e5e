"""The disk under the state database fills up: a 2 MB tmpfs is the directory of ``watcher.state_path``.

While the disk is full, phases complete on the watched host and a delivery is in flight. The daemon keeps
running and says what is wrong once, in one line (no traceback, no crash loop), the database stays sound,
and once the filler is deleted the daemon recovers by itself: each phase that completed meanwhile is recorded
once, and every event is delivered. Started on a full disk, the daemon waits for space instead of exiting.

The tmpfs is mounted as root. Where that is not allowed, it is mounted in a user and mount namespace of its
own (``unshare``); the daemon and every command that opens the database run in that namespace (``nsenter``),
and the test fills and empties the disk through ``/proc/PID/root`` of the process that holds it. (SQLite
cannot be pointed through ``/proc/PID/root``: it resolves that link, and would open the file underneath.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SSHFactory
from tests.faults.ledger import Ledger
from tests.faults.scenario import read_store, received_events
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import REPO, sim_env, sim_host, ssh_entry, to_toml, write_config
from tests.harness.receiver import Receiver, Reply
from tests.harness.services import IN_CI, require_binary
from tests.pueue_sim.scenario import SimHost

pytestmark = pytest.mark.integration

SIZE = "2m"
HOLD = 3.0  # a delivery held open this long at the receiver (the sink times out after 10 s)

# Runs read_store in the disk's namespace and prints its rows as JSON.
_QUERY = (
    "import json, pathlib, sys; from tests.faults.scenario import read_store; "
    "print(json.dumps(read_store(pathlib.Path(sys.argv[1]), sys.argv[2], tuple(json.loads(sys.argv[3])))))"
)


@dataclass
class SmallDisk:
    """A full-able file system: ``path`` as the daemon sees it, ``files`` where this test reaches its files,
    and ``enter``, the prefix that runs a command in its mount namespace (empty when mounted for everyone)."""

    path: Path
    files: Path
    enter: list[str] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.path / "state.db"

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.enter:
            return read_store(self.state, sql, params)
        argv = [*self.enter, sys.executable, "-c", _QUERY, str(self.state), sql, json.dumps(params)]
        done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=REPO, timeout=60)
        return [tuple(row) for row in json.loads(done.stdout)]

    def watcher(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m watcher ARGS`` where the daemon would run."""
        argv = [*self.enter, sys.executable, "-m", "watcher", *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO, timeout=120)

    def daemon(self, config: Path, log: Path) -> DaemonProcess:
        return _Daemon(config, log, self.enter)

    def fill(self) -> Path:
        """A file that takes every free byte of the file system."""
        filler = self.files / "filler"
        with filler.open("wb", buffering=0) as out:
            for chunk in (1 << 16, 1 << 12, 1):
                try:
                    while True:
                        out.write(b"\0" * chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
        return filler


class _Daemon(DaemonProcess):
    """The daemon, started in the disk's namespace (nsenter execs it: the pid and its signals are its own)."""

    def __init__(self, config: Path, log: Path, enter: list[str]) -> None:
        super().__init__(config, log)
        self.enter = enter

    def start(self) -> DaemonProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.enter, sys.executable, "-m", "watcher", "run", "-c", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        return self


@contextlib.contextmanager
def small_disk(mountpoint: Path) -> Iterator[SmallDisk]:
    """A fresh tmpfs of ``SIZE`` at ``mountpoint``; unmounted (or its namespace ended) on exit."""
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode == 0:
        try:
            yield SmallDisk(mountpoint, mountpoint)
        finally:
            subprocess.run(["umount", "--lazy", str(mountpoint)], check=False)
        return
    unshare, nsenter = require_binary("unshare"), require_binary("nsenter")
    script = (
        f"mount -t tmpfs -o size={SIZE} tmpfs {shlex.quote(str(mountpoint))} && echo ready && exec sleep 3600"
    )
    holder = subprocess.Popen(
        [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", script],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stderr is not None
        if holder.stdout.readline().strip() != "ready":
            message = f"no tmpfs: {mounted.stderr.strip()}; nor in a namespace: {holder.stderr.read()}"
            if IN_CI:
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        enter = [nsenter, f"--target={holder.pid}", "--user", "--mount", "--preserve-credentials"]
        yield SmallDisk(mountpoint, Path(f"/proc/{holder.pid}/root") / mountpoint.relative_to("/"), enter)
    finally:
        holder.kill()
        holder.communicate()  # and close its pipes


def gated_batch(sim: SimHost, group: str, names: list[str]) -> list[int]:
    return [sim.add_gated(name, group=group, label=name) for name in names]


def release(sim: SimHost, names: list[str], ids: list[int]) -> None:
    for name in names:
        sim.finish(name)
    for task_id in ids:
        sim.wait_for_status(task_id, "Done")


def test_a_full_disk_is_survived_and_nothing_is_lost(
    tmp_path: Path, sshd_factory: SSHFactory, ledger: Ledger
) -> None:
    """The disk fills while a delivery is in flight, then phases complete: one-line errors, a sound store, and
    once space returns, each phase is recorded once and every event delivered, without a restart."""
    with sim_host(tmp_path / "sim", "v4") as sim, small_disk(tmp_path / "disk") as disk, Receiver() as hook:
        for group in ("p0", "p1", "p2"):
            sim.pueue("group", "add", group, check=True)
        server = sshd_factory.start(sim_env(sim))
        config = write_config(
            tmp_path / "c.toml",
            [ssh_entry("bigblack", server, sim)],
            watcher={"poll_interval": "1s", "fast_interval": "0.3s", "state_path": str(disk.state)},
            metrics={"listen": ""},
        )
        with config.open("a") as out:
            out.write(f'[[alerts]]\nname = "hook"\nkind = "webhook"\nurl = {to_toml(hook.url + "/hook")}\n')
        daemon = disk.daemon(config, tmp_path / "daemon.log")

        def phases(status: str) -> list[str]:
            return [pid for (pid,) in disk.query("SELECT id FROM phases WHERE status = ?", (status,))]

        try:
            daemon.start()
            daemon.wait_for(lambda: daemon.events("started"))
            batches = {"p0": ["p0-a"], "p1": ["p1-a", "p1-b"], "p2": ["p2-a"]}
            ids = {group: gated_batch(sim, group, names) for group, names in batches.items()}
            daemon.wait_for(lambda: len(phases("open")) == 3)

            with ledger.fault("disk full under the state database"):
                hook.script(Reply(delay=HOLD))  # p0's delivery is in flight while the disk fills
                release(sim, batches["p0"], ids["p0"])
                daemon.wait_for(lambda: hook.requests)
                filler = disk.fill()
                # The receiver accepts p0's event, but the outbox cannot record that: p0 stays pending.
                daemon.wait_for(lambda: daemon.events("outbox.store_failed"), timeout=60)
                release(sim, batches["p1"], ids["p1"])
                daemon.wait_for(lambda: daemon.events("store.write_failed"), timeout=60)
                release(sim, batches["p2"], ids["p2"])
                cycles = len(daemon.events("cycle"))
                daemon.wait_for(lambda: len(daemon.events("cycle")) >= cycles + 3)  # a few failing cycles
                assert len(phases("completed")) == 1
                assert disk.query("PRAGMA integrity_check") == [("ok",)]

                filler.unlink()  # space returns: the daemon carries on by itself
                daemon.wait_for(lambda: len(phases("completed")) == 3, timeout=60)
                daemon.wait_for(lambda: daemon.events("store.recovered"), timeout=60)

                def delivered() -> bool:
                    committed = {event_id for (event_id,) in disk.query("SELECT id FROM events")}
                    again = received_events(
                        hook.requests[1:]
                    )  # p0 is sent again: its delivery was not recorded
                    # Only the phases' events: a loaded test machine (this host is the watched one) may
                    # commit a probe.breach of its own, which the test does not wait for.
                    phases_done = {i for i in committed if i.startswith("phase.completed:")}
                    return len(phases_done) == 3 and phases_done <= {e["id"] for e in again}

                daemon.wait_for(delivered, timeout=120)
                assert daemon.terminate() == 0
            log = daemon.log.read_text()
        finally:
            daemon.stop()

        assert "Traceback" not in log
        assert len(daemon.events("started")) == 1, "the daemon restarted"
        assert all(line["event"] != "<not json>" for line in daemon.lines()), log[-2000:]
        errors = [line for line in daemon.lines() if line["level"] == "error"]
        assert [e["event"] for e in errors] == ["outbox.store_failed", "store.write_failed"], errors
        assert errors[1]["error"] == f"{disk.state}: commit failed: database or disk is full"
        proc = disk.watcher("history", "--json", "-c", str(config))
        assert proc.returncode == 0, proc.stderr
        history = json.loads(proc.stdout)
        assert sorted((p["group"], p["status"], p["tasks"]) for p in history) == [
            ("p0", "completed", 1),
            ("p1", "completed", 2),
            ("p2", "completed", 1),
        ]
        committed = [event_id for (event_id,) in disk.query("SELECT id FROM events")]
        received = received_events(hook.requests)
        phase_events = {e["id"]: e["phase"] for e in received if e["event"] == "phase.completed"}
        ledger.events(committed, [e["id"] for e in received], phase_events.values())
        assert Counter(phase_events.values()) == Counter(p["id"] for p in history)
        assert disk.query("PRAGMA integrity_check") == [("ok",)]


def test_a_daemon_started_on_a_full_disk_waits_for_space(
    tmp_path: Path, sshd_factory: SSHFactory, ledger: Ledger
) -> None:
    """Started on a full disk, the daemon says so once and waits (no exit, no crash loop); with space it
    starts, and records what completed meanwhile. Stopped while the disk is full again, it exits 0 cleanly."""
    with sim_host(tmp_path / "sim", "v4") as sim, small_disk(tmp_path / "disk") as disk:
        sim.pueue("group", "add", "p1", check=True)
        server = sshd_factory.start(sim_env(sim))
        config = write_config(
            tmp_path / "c.toml",
            [ssh_entry("bigblack", server, sim)],
            watcher={"poll_interval": "1s", "fast_interval": "0.3s", "state_path": str(disk.state)},
            metrics={"listen": ""},
        )
        ids = gated_batch(sim, "p1", ["p1-a"])
        first = disk.watcher("once", "-c", str(config))  # the store exists, p1 is open in it
        assert first.returncode == 0, first.stdout + first.stderr
        daemon = disk.daemon(config, tmp_path / "daemon.log")
        try:
            with ledger.fault("disk full when the daemon starts"):
                filler = disk.fill()
                daemon.start()
                (waiting,) = daemon.wait_for(lambda: daemon.events("store.unavailable"), timeout=60)
                assert waiting["error"].startswith(f"{disk.state}: "), waiting
                assert "disk full" in waiting["error"], waiting
                release(sim, ["p1-a"], ids)  # completes while the daemon waits for space
                assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon gave up"
                filler.unlink()
                daemon.wait_for(lambda: daemon.events("phase.completed"), timeout=60)
                assert [line["event"] for line in daemon.lines()][:3] == [
                    "store.unavailable",
                    "store.recovered",
                    "started",
                ]

            with ledger.fault("disk full when the daemon stops"):
                filler = disk.fill()
                assert daemon.terminate() == 0
                assert daemon.events("stopped")
                filler.unlink()
            log = daemon.log.read_text()
        finally:
            daemon.stop()
        assert "Traceback" not in log
        proc = disk.watcher("history", "--json", "-c", str(config))
        assert proc.returncode == 0, proc.stderr
        assert [(p["group"], p["status"]) for p in json.loads(proc.stdout)] == [("p1", "completed")]
        assert disk.query("PRAGMA integrity_check") == [("ok",)]
