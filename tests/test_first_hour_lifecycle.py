"""Issue 14, the daemon's lifecycle in the first hour, as real processes: a watcher with no hosts warns and
stops cleanly; a second daemon on a store is refused in one line; a read-only command never creates a store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import REPO, watcher, write_config
from watcher import __version__
from watcher.history import SYSTEM_UNIT_HINT
from watcher.shard import shard_of

# Real processes of the watcher, and no service: part of the fast tier (`./dev test fast`).

HOST = {"name": "gpu-0001", "transport": "local", "pueue": "/nonexistent"}


def config_at(tmp_path: Path, hosts: list[dict[str, Any]], **watcher_keys: Any) -> tuple[Path, Path]:
    """A configuration whose store is ``tmp_path/state/state.db`` (not created here), metrics off."""
    state = tmp_path / "state" / "state.db"
    config = write_config(
        tmp_path / "c.toml", hosts,
        watcher={"state_path": str(state), "poll_interval": "1s", **watcher_keys}, metrics={"listen": ""},
    )  # fmt: skip
    return config, state


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    config, _ = config_at(tmp_path, [])
    process = DaemonProcess(config, tmp_path / "daemon.log")
    yield process
    process.stop()


def one_log_line(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(said) == 1, said
    line: dict[str, Any] = json.loads(said[0])
    return line


def test_run_without_hosts_warns_then_stops_on_sigterm_with_exit_0(daemon: DaemonProcess) -> None:
    """No ``[[hosts]]``: ``started`` with 0 hosts, a ``no_hosts`` warning that says why, and SIGTERM ends
    in ``stopped``, exit 0 (it crashed on an empty ``asyncio.wait`` before)."""
    daemon.start()
    daemon.wait_for(lambda: daemon.events("cycle"))
    assert daemon.terminate() == 0, daemon.log.read_text()
    (started,) = daemon.events("started")
    assert started["hosts"] == 0
    # The line an operator looks for first: which program, which file, which store, where the metrics are.
    assert started["version"] == __version__
    assert started["config"] == str(daemon.config.resolve())
    assert started["state_path"] == str(daemon.config.parent / "state" / "state.db")
    assert started["metrics"] is None  # metrics.listen = ""
    (warning,) = daemon.events("no_hosts")
    assert warning["level"] == "warning"
    assert warning["reason"] == "no hosts configured: add a [[hosts]] table to the configuration"
    events = [line["event"] for line in daemon.lines()]
    assert events[-1] == "stopped"
    assert "crashed" not in events
    assert "Traceback" not in daemon.log.read_text()


def test_run_with_an_empty_shard_warns_then_stops_on_sigterm_with_exit_0(tmp_path: Path) -> None:
    """``--shard i/2`` that holds none of a one-host configuration: the warning names the shard, and SIGTERM
    stops the daemon with exit 0."""
    config, _ = config_at(tmp_path, [HOST])
    empty = f"{3 - shard_of(HOST['name'], 2)}/2"
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "--shard", empty, "-c", str(config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        reader = DaemonProcess(config, log)
        reader.proc = proc
        reader.wait_for(lambda: reader.events("cycle"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (warning,) = reader.events("no_hosts")
    assert warning["level"] == "warning"
    reason = f"the one configured host is not in shard {empty}: this watcher has nothing to watch"
    assert warning["reason"] == reason
    assert [line["event"] for line in reader.lines()][-1] == "stopped"


def test_a_second_daemon_on_the_same_store_is_refused(tmp_path: Path, daemon: DaemonProcess) -> None:
    """While one daemon runs, a second ``run`` (and a ``once``) on its store is refused in one line naming
    the store and the holder's pid, exit 2, and changes nothing; ``history`` still reads; once the first has
    stopped, the store is free again."""
    state = tmp_path / "state" / "state.db"
    daemon.start()
    daemon.wait_for(lambda: daemon.events("started"))
    assert daemon.proc is not None
    pid = daemon.proc.pid
    lock = state.with_name("state.db.lock")
    assert lock.read_text() == f"{pid}\n"
    assert lock.stat().st_mode & 0o777 == 0o600
    for command in (("run",), ("once",), ("once", "--json")):
        proc = watcher(*command, "-c", str(daemon.config), timeout=60)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        if command == ("once", "--json"):
            assert proc.stdout == ""  # no "[]": nothing ran
        line = one_log_line(proc)
        assert (line["event"], line["level"]) == ("store.unusable", "error")
        assert line["error"] == f"state store {state} is in use by pid {pid}"
    assert lock.read_text() == f"{pid}\n"
    reading = watcher("history", "--json", "-c", str(daemon.config), timeout=60)
    assert (reading.returncode, reading.stdout, reading.stderr) == (0, "[]\n", "")
    assert daemon.terminate() == 0
    after = watcher("once", "--json", "-c", str(daemon.config), timeout=60)
    assert (after.returncode, after.stdout) == (0, "[]\n"), after.stderr


@pytest.mark.parametrize("json_output", [False, True], ids=["table", "json"])
def test_history_without_a_store_says_so_and_creates_nothing(tmp_path: Path, json_output: bool) -> None:
    """``history`` where ``state_path`` names no file: one line on stderr, exit 1, and neither the file
    nor its directory is created."""
    config, state = config_at(tmp_path, [HOST])
    before = sorted(os.listdir(tmp_path))
    proc = watcher("history", *(["--json"] if json_output else []), "-c", str(config), timeout=60)
    assert (proc.returncode, proc.stdout) == (1, ""), proc.stderr
    assert proc.stderr.splitlines() == [
        f"no state store at {state}: no watcher has recorded there ({SYSTEM_UNIT_HINT})"
    ]
    assert sorted(os.listdir(tmp_path)) == before
    assert not state.parent.exists()


def test_history_names_the_store_it_read_and_the_filters_that_matched_nothing(tmp_path: Path) -> None:
    """The table opens with the store's path; an empty answer to ``--group`` says so, not "no phases
    recorded yet"; ``--json`` prints only the document."""
    config, state = config_at(tmp_path, [HOST])
    assert watcher("once", "-c", str(config), timeout=60).returncode in (0, 1)  # makes the store
    table = watcher("history", "-c", str(config), timeout=60)
    assert (table.returncode, table.stdout, table.stderr) == (
        0, f"state store: {state}\nno phases recorded yet\n", ""
    )  # fmt: skip
    nosuch = watcher("history", "--group", "nosuch", "-c", str(config), timeout=60)
    assert nosuch.stdout.splitlines() == [f"state store: {state}", "no phases for group 'nosuch'"]
    document = watcher("history", "--json", "--group", "nosuch", "-c", str(config), timeout=60)
    assert (document.returncode, document.stdout, document.stderr) == (0, "[]\n", "")


def test_health_and_validate_on_a_fresh_configuration(tmp_path: Path) -> None:
    """Before any daemon ran: ``health`` says the store is not created yet (not a failure) and creates none;
    ``config validate`` warns about a configuration with no hosts, and counts in the singular."""
    config, state = config_at(tmp_path, [])
    health = watcher("health", "-c", str(config))
    expected = f"ok    state store: {state}: not created yet (the daemon creates it)"
    assert expected in health.stdout.splitlines()
    assert not state.exists() and not state.parent.exists()
    validate = watcher("config", "validate", str(config))
    assert validate.returncode == 0
    reason = "no hosts configured: add a [[hosts]] table to the configuration"
    assert validate.stderr == f"warning: {config}: {reason}\n"
    assert validate.stdout == f"ok: {config}: 0 hosts, 0 checks, 0 sinks\n"
    (tmp_path / "one").mkdir()
    one, _ = config_at(tmp_path / "one", [{**HOST, "pueue": "pueue"}])
    assert watcher("config", "validate", str(one)).stdout.endswith(": 1 host, 0 checks, 0 sinks\n")
