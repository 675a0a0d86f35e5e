"""Hostile names end to end (issue 8, point 5): group names, labels, commands and paths that hold shell
metacharacters, Slack mentions, markdown, terminal escapes and 1 MB strings go through the real daemon, real
sshd and the pueue simulator, up to Slack and a webhook; gates and hygiene act on those groups, nothing runs,
and the terminal, the log and /metrics stay clean.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SSHFactory
from tests.faults import hostile
from tests.faults.hostile_kit import TERMINAL_UNSAFE, PueueSocket, assert_inert, cli, toml
from tests.faults.ledger import Ledger
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import REPO, sim_env, ssh_entry
from tests.harness.receiver import Receiver
from tests.harness.services import free_port
from tests.pueue_sim.scenario import SimHost
from watcher.sanitize import LABEL_MAX
from watcher.sanitize import label as label_of


def history(config: Path) -> list[dict[str, Any]]:
    proc = cli("history", "--json", "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


@pytest.mark.integration
def test_hostile_names_travel_end_to_end(ledger: Ledger, tmp_path: Path, sshd_factory: SSHFactory) -> None:
    """Hostile group names, labels, commands and paths (shell code, Slack mentions, markdown, terminal
    escapes, a NUL, 1 MB) polled through sshd by the daemon: gates and hygiene act on them intact, nothing
    runs, Slack pings nobody, and the terminal output, the log and /metrics stay clean."""
    marker = tmp_path / "marker"
    marker.mkdir()
    attacks = hostile.shell(marker)
    names = [*attacks, *hostile.SLACK, *hostile.MARKDOWN, *hostile.TERMINAL, "nul\x00name"]
    huge_group = hostile.one_megabyte("group")
    huge_label = hostile.one_megabyte("label")
    huge_command = "true #" + hostile.one_megabyte("command")
    # Gates start groups whose names begin with "-", hold shell code, or paint the terminal.
    gated = {"<!channel>": attacks[10], "*bold*": attacks[0], "~strike~": hostile.TERMINAL[0]}
    receivers = [Receiver().start(), Receiver().start()]
    slack_hook, web_hook = receivers
    sim = SimHost(tmp_path / "sim", "v4")
    daemon = DaemonProcess(tmp_path / "c.toml", tmp_path / "daemon.log")
    with ledger.fault("hostile names end to end"):
        try:
            sim.start_daemon()
            pueue = PueueSocket(sim)
            tried = 0
            for i, name in enumerate([*names, huge_group]):
                pueue.group(name, paused=True)
                label = names[(i + 7) % len(names)]
                path = sim.work_dir / f"p{i}" / label.lstrip("/").replace("\x00", "")
                path.mkdir(parents=True, exist_ok=True)
                pueue.add(name, "exit 3" if i % 3 == 0 and name not in gated else "true", label, path)
                tried += 3
            pueue.group("big", paused=True)
            pueue.add("big", "true", huge_label)
            pueue.add("big", huge_command, "command of 1 MB")  # too long for execve: FailedToSpawn
            for attack in attacks:  # commands that would touch a marker if anything ran them: kept stashed
                pueue.add("default", attack, attack, stashed=True)
            tried += 3 + len(attacks)
            ledger.hostile(tried)

            server = sshd_factory.start(sim_env(sim))
            metrics_port = free_port()
            config = tmp_path / "c.toml"
            config.write_text(
                toml(
                    {
                        "watcher": {
                            "poll_interval": "1s",
                            "fast_interval": "0.5s",
                            "state_path": str(tmp_path / "state.db"),
                        },
                        "hygiene": {"max_state_bytes": 1, "clean": "all", "cooldown": "0.1s"},
                        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
                    },
                    {
                        "hosts": [ssh_entry("bigblack", server, sim)],
                        "gates": [{"host": "bigblack", "after": a, "start": b} for a, b in gated.items()],
                        "alerts": [
                            {"name": "slack", "kind": "slack", "url": f"{slack_hook.url}/services/T/B/x"},
                            {"name": "hook", "kind": "webhook", "url": f"{web_hook.url}/hook"},
                        ],
                    },
                )
            )
            daemon.start()
            daemon.wait_for(lambda: daemon.events("started"))  # its store exists: history can read it
            # The group with a 1 MB name is over watcher.max_group_name: not watched (and counted as dropped).
            every = {*names, "big"}
            daemon.wait_for(lambda: {p["group"] for p in history(config) if p["status"] == "open"} >= every)
            for name in [*names, huge_group, "big"]:
                if name not in gated.values():
                    pueue.start(name)
            pueue.close()

            def completed() -> set[str]:
                return {
                    e["group"]
                    for r in web_hook.requests
                    for e in r.json()["events"]
                    if e["event"] == "phase.completed"
                }

            daemon.wait_for(lambda: completed() >= every, timeout=180)
            # pueue clean cannot be given a name with a NUL or of 1 MB: those groups are never cleaned.
            uncleanable = {"default", "nul\x00name", huge_group}
            daemon.wait_for(lambda: {t["group"] for t in sim.status()["tasks"].values()} == uncleanable)
            group_status = {name: group["status"] for name, group in sim.status()["groups"].items()}
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).read()
            assert daemon.terminate() == 0
            status_table_out = cli("status", "-c", str(config))
            status_json_out = cli("status", "--json", "-c", str(config))
            history_table_out = cli("history", "-c", str(config))
            history_json_out = cli("history", "--json", "-c", str(config))
        finally:
            daemon.stop()
            sim.close()
            for receiver in receivers:
                receiver.stop()

        # Nothing ran: no marker on the host (the same machine here), and the attacks are still stashed.
        assert hostile.marker_files(marker) == []
        # The names travelled intact: the gate started the group it names; hygiene cleaned every group.
        events = [e for r in web_hook.requests for e in r.json()["events"]]
        gates = [e for e in events if e["event"] == "gate.started"]
        assert sorted(g["group"] for g in gates) == sorted(gated.values())
        assert [group_status[name] for name in gated.values()] == ["Running"] * len(gated)
        cleaned = {g for e in events if e["event"] == "state.cleaned" for g in e["groups"]}
        assert cleaned == every - uncleanable
        # Every committed completion reached the webhook; each phase once.
        phases = [p for p in history(config) if p["status"] == "completed"]
        received = [e["id"] for e in events]
        ledger.events(
            [f"phase.completed:{p['id']}" for p in phases],
            received,
            [e["phase"] for e in events if e["event"] == "phase.completed"],
        )
        assert {p["group"] for p in phases} >= every
        assert huge_group not in {p["group"] for p in phases}
        # Slack: nothing it would read as a mention, a link or an entity; 1 MB strings cut to Slack's limits.
        for request in slack_hook.requests:
            payload = request.json()
            assert_inert(payload)
            assert all(len(b["text"]["text"]) <= 3000 for b in payload["blocks"])
            assert len(payload["text"]) <= 3000
        assert slack_hook.requests
        # Terminal output: no escape or control character; JSON output is ASCII.
        for proc in (status_table_out, history_table_out):
            assert proc.returncode == 0, proc.stderr
            assert not TERMINAL_UNSAFE.search(proc.stdout), repr(proc.stdout[:2000])
            assert max(len(line) for line in proc.stdout.splitlines()) < 1000
        for proc in (status_json_out, history_json_out):
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.isascii()
            json.loads(proc.stdout)
        # The log is one JSON object per line (no name broke a line), /metrics is well formed and keeps
        # every group name as it is.
        assert [line for line in daemon.lines() if line.get("event") == "<not json>"] == []
        assert max(map(len, daemon.log.read_text().splitlines())) < 20_000  # journald splits beyond 48K
        families = list(text_string_to_metric_families(metrics.decode()))
        groups = {s.labels.get("group") for f in families for s in f.samples}
        # Each name as its label: itself when short and printable, else cut, cleaned and hashed (sanitize.py).
        assert groups >= {label_of(name) for name in names}
        assert all(len(g) <= LABEL_MAX for g in groups if g is not None)
        dropped = [s for f in families for s in f.samples if s.name == "pueue_watcher_groups_dropped"]
        assert {s.labels["reason"]: s.value for s in dropped}["name_length"] == 1


def run_in_terminal(args: list[str], env: dict[str, str], timeout: float = 180) -> bytes:
    """``python -m watcher ARGS`` with a pseudo-terminal as its stdout and stderr; what it printed."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "watcher", *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, cwd=REPO, env=env)  # fmt: skip
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side closed, the command has ended
                    break
                if not chunk:
                    break
                output += chunk
        assert proc.wait(timeout=30) == 0, output.decode(errors="replace")[-3000:]
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return bytes(output)


def test_the_log_in_a_terminal_shows_hostile_names_escaped(ledger: Ledger, tmp_path: Path) -> None:
    """In a terminal, groups and labels named with terminal escapes are logged escaped, never let loose on the
    terminal; a group with a 1 MB name is not watched, and shown nowhere."""
    names = [*hostile.TERMINAL, hostile.one_megabyte("\x1b[2J")]
    ledger.hostile(len(names))
    sim = SimHost(tmp_path / "sim", "v4")
    with ledger.fault("terminal escapes in the console log"):
        try:
            sim.start_daemon()
            pueue = PueueSocket(sim)
            ids = []
            for name in names:
                pueue.group(name, paused=False)
                ids.append(pueue.add(name, "exit 1", name))
            pueue.close()
            for task_id in ids:
                sim.wait_for_status(task_id, "Done")
            config = tmp_path / "c.toml"
            host = {"name": "local", "transport": "local", "pueue": str(sim.pueue_bin),
                    "pueue_dir": str(sim.pueue_dir)}  # fmt: skip
            watcher_section = {"state_path": str(tmp_path / "state.db"), "alert_on_first_sight": True}
            config.write_text(
                toml({"watcher": watcher_section, "metrics": {"listen": ""}}, {"hosts": [host]})
            )
            output = run_in_terminal(["once", "-c", str(config)], {**os.environ, **sim_env(sim)})
        finally:
            sim.close()
        text = output.decode()
        # The 1 MB name is over watcher.max_group_name: that group is not watched, and said so.
        assert len(re.findall(r"phase\.completed(?!:)", text)) == len(names) - 1, text[-3000:]  # not in ids
        assert "host.groups_dropped" in text
        *short, huge = names
        for name in short:  # shown escaped, as a Python literal ('\x1b[31mred\x1b[0m'), in its group's lines
            assert repr(name).encode() in output, repr(name)
            assert name.encode() not in output
        assert huge[:40].encode() not in output and repr(huge)[:40].encode() not in output  # not watched
        for raw in ("\x1b[2J", "\x1b]", "\x9b", "\x07", "\x08", "\u202e", "\u2028", "over\rwrite"):
            assert raw.encode() not in output, raw
        assert max(len(line) for line in text.splitlines()) < 20_000
