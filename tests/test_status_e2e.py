"""End to end: ``pueue-watcher status`` against simulated pueue hosts behind real sshd servers."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SSHFactory
from tests.harness.fleet import sim_env, sim_host, ssh_entry, watcher, write_config
from tests.harness.services import free_port
from tests.pueue_sim.scenario import SimHost

pytestmark = pytest.mark.integration


def populate(sim: SimHost, prefix: str) -> dict[str, dict[str, int]]:
    """A small, settled queue: default has 2 successes and 1 failure; p1 (parallel 1) has one task
    running, one queued behind it and one stashed. Returns the expected non-zero counts per group."""
    sim.pueue("group", "add", "p1", "-p", "1", check=True)
    done = [sim.add("true", label=f"{prefix}-ok-{i}") for i in range(2)] + [
        sim.add("exit 3", label=f"{prefix}-bad")
    ]
    running = sim.add_gated(f"{prefix}-run", group="p1", label=f"{prefix}-run")
    sim.add_gated(f"{prefix}-next", group="p1")
    sim.add("true", group="p1", stashed=True)
    for task_id in done:
        sim.wait_for_status(task_id, "Done")
    sim.wait_for_status(running, "Running")
    return {"default": {"success": 2, "failed": 1}, "p1": {"running": 1, "queued": 1, "stashed": 1}}


@pytest.fixture
def v3_host(tmp_path: Path) -> Iterator[SimHost]:
    with sim_host(tmp_path / "v3", "v3") as sim:
        yield sim


@pytest.fixture
def v4_host(tmp_path: Path) -> Iterator[SimHost]:
    with sim_host(tmp_path / "v4", "v4") as sim:
        yield sim


def counts(document: dict, host: str) -> dict[str, dict[str, int]]:  # type: ignore[type-arg]
    (entry,) = [h for h in document["hosts"] if h["name"] == host]
    return {g["name"]: {k: v for k, v in g["tasks"].items() if v} for g in entry["groups"]}


def test_three_hosts_v3_v4_and_a_dead_port(
    tmp_path: Path, sshd_factory: SSHFactory, v3_host: SimHost, v4_host: SimHost
) -> None:
    """v3 and v4 hosts are counted exactly; the dead one is ok=false with a one-line reason; exit 1."""
    expected_v3 = populate(v3_host, "three")
    expected_v4 = populate(v4_host, "four")
    s3 = sshd_factory.start(sim_env(v3_host))
    s4 = sshd_factory.start(sim_env(v4_host))
    dead = {
        "name": "dead",
        "address": "127.0.0.1",
        "port": free_port(),
        "known_hosts": str(s3.keys.known_hosts),
    }
    config = write_config(
        tmp_path / "c.toml", [ssh_entry("old", s3, v3_host), ssh_entry("new", s4, v4_host), dead]
    )
    proc = watcher("status", "--json", "-c", str(config))
    assert proc.returncode == 1, proc.stderr
    document = json.loads(proc.stdout)
    assert [h["name"] for h in document["hosts"]] == ["old", "new", "dead"]
    assert counts(document, "old") == expected_v3
    assert counts(document, "new") == expected_v4
    old = document["hosts"][0]
    assert old["ok"] is True
    assert old["error"] is None
    assert old["state_file_bytes"] == v3_host.state_path.stat().st_size
    assert {g["name"]: (g["status"], g["parallel"]) for g in old["groups"]} == {
        "default": ("Running", 1),
        "p1": ("Running", 1),
    }
    bad = document["hosts"][2]
    assert bad["ok"] is False
    assert "connection refused" in bad["error"]
    assert "\n" not in bad["error"]

    table = watcher("status", "-c", str(config))
    assert table.returncode == 1
    assert "three-" not in table.stdout  # labels are not part of the table
    assert "UNREACHABLE" in table.stdout
    assert "p1" in table.stdout


def test_one_host_filter(tmp_path: Path, sshd_factory: SSHFactory, v4_host: SimHost) -> None:
    populate(v4_host, "only")
    server = sshd_factory.start(sim_env(v4_host))
    dead = {"name": "dead", "address": "127.0.0.1", "port": free_port()}
    config = write_config(tmp_path / "c.toml", [ssh_entry("new", server, v4_host), dead])
    proc = watcher("status", "--json", "--host", "new", "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    assert [h["name"] for h in json.loads(proc.stdout)["hosts"]] == ["new"]
    unknown = watcher("status", "--host", "nope", "-c", str(config))
    assert unknown.returncode == 2
    assert "no host named 'nope'" in unknown.stderr


def test_each_failure_is_reported_per_host(
    tmp_path: Path, sshd_factory: SSHFactory, v4_host: SimHost
) -> None:
    """Daemon down, pueue missing, wrong host key, malformed state, and a hanging command: each host gets
    its own clear one-line reason while the healthy host is still reported."""
    populate(v4_host, "good")
    good = sshd_factory.start(sim_env(v4_host))

    with sim_host(tmp_path / "down", "v4") as down:
        down.stop_daemon()
        s_down = sshd_factory.start(sim_env(down))

        broken = SimHost(tmp_path / "broken", "v4")
        broken.start_daemon()
        try:
            s_broken = sshd_factory.start(sim_env(broken))
            # The daemon is alive, but its state file is cut short (a disk hiccup, an interrupted copy).
            broken.state_path.write_text('{"tasks": {"0": {"id": 0, "created_at": "2025-')

            s_key = sshd_factory.start()
            s_key.stop()
            s_key.rotate_host_key()  # known_hosts still has the old key: a man in the middle, as seen
            s_key.start()

            hang = tmp_path / "hang"
            hang.write_text("#!/bin/sh\nsleep 60\n")
            hang.chmod(0o755)
            s_hang = sshd_factory.start()

            hosts = [
                ssh_entry("good", good, v4_host),
                ssh_entry("down", s_down, down),
                ssh_entry("nopueue", good, v4_host, pueue="/nonexistent/bin/pueue", read_state_file=False),
                ssh_entry("broken", s_broken, broken),
                ssh_entry("mitm", s_key, v4_host),
                ssh_entry("hang", s_hang, None, pueue=str(hang), read_state_file=False),
            ]
            config = write_config(tmp_path / "c.toml", hosts, watcher={"host_timeout": "10s"})
            proc = watcher("status", "--json", "-c", str(config))
        finally:
            broken.close()

    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    result = {h["name"]: h for h in json.loads(proc.stdout)["hosts"]}
    assert result["good"]["ok"] is True
    assert counts({"hosts": [result["good"]]}, "good")["default"] == {"success": 2, "failed": 1}
    reasons = {name: h["error"] for name, h in result.items() if name != "good"}
    assert all(h["ok"] is False for n, h in result.items() if n != "good")
    assert all(r is not None and "\n" not in r and len(r) < 400 for r in reasons.values()), reasons
    assert "pueue status failed (exit 1)" in reasons["down"]
    assert "daemon" in reasons["down"].lower()
    assert reasons["nopueue"] == "the pueue client was not found on the host at /nonexistent/bin/pueue"
    assert "truncated" in reasons["broken"]
    assert "HOST KEY CHANGED" in reasons["mitm"]
    assert "timed out" in reasons["hang"]


HOSTILE = ["it's", "$(touch PWNED)", "a;touch PWNED2", "with space", "`touch PWNED3`", "x|y&&z"]


def test_hostile_group_names_and_labels_execute_nothing(
    tmp_path: Path, sshd_factory: SSHFactory, client_keys: object
) -> None:
    """Group names, labels and even the configured paths hold quotes, $(…), ; and spaces: they are shown
    as they are and nothing runs."""
    root = tmp_path / "we'ird $(touch PWNED4) ;dir"
    with sim_host(root, "v4") as sim:
        for name in HOSTILE:
            sim.pueue("group", "add", name, check=True)
            sim.add("true", group=name, label=name)
        sim.wait_until(lambda: all(t["status"].get("Done") for t in sim.state()["tasks"].values()))
        server = sshd_factory.start(sim_env(sim))
        config = write_config(tmp_path / "c.toml", [ssh_entry("odd", server, sim)])
        proc = watcher("status", "--json", "-c", str(config))
        table = watcher("status", "-c", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    groups = {g["name"]: g["tasks"]["success"] for g in json.loads(proc.stdout)["hosts"][0]["groups"]}
    assert groups == dict.fromkeys(HOSTILE, 1) | {"default": 0}
    for name in HOSTILE:
        assert name in table.stdout
    # An injected `touch` would run in a shell's working directory: the SSH login's home, the watcher's cwd,
    # or a task's directory (all under tmp_path for the simulator).
    pwned = [
        *tmp_path.rglob("PWNED*"),
        *Path.home().glob("PWNED*"),
        *Path.cwd().glob("PWNED*"),
        *Path("/").glob("PWNED*"),
    ]
    assert pwned == []


def test_sshd_is_really_there() -> None:
    """Under CI the harness must have a real sshd (it fails rather than skips when missing)."""
    if os.environ.get("CI", "").lower() == "true":
        assert Path("/usr/sbin/sshd").exists()
    out = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    assert "OpenSSH" in out.stderr
