"""The docs match the code: every command in the README's `sh` blocks runs, and the configuration reference
is what the schema generates."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SSHFactory
from tests.harness.fleet import REPO, sim_env, sim_host, ssh_entry, write_config
from watcher.config_docs import reference

pytestmark = pytest.mark.integration

README = REPO / "README.md"


def readme_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return sorted({line for line in lines if line})


def test_configuration_reference_is_generated() -> None:
    """docs/configuration.md is exactly what `pueue-watcher config docs` prints (regenerate it if not)."""
    assert (REPO / "docs" / "configuration.md").read_text() == reference()


def test_readme_commands_run(tmp_path: Path, sshd_factory: SSHFactory) -> None:
    """Each README command runs against a test host named bigblack, without error or traceback."""
    commands = readme_commands()
    assert any(c.startswith("./dev run") for c in commands)
    with sim_host(tmp_path / "sim", "v4") as sim:
        sim.pueue("group", "add", "p1", check=True)
        sim.add("true", group="p1")
        server = sshd_factory.start(sim_env(sim))
        config = write_config(
            tmp_path / "config.toml",
            [ssh_entry("bigblack", server, sim)],
            watcher={"state_path": str(tmp_path / "state.db")},
            metrics={"listen": ""},
        )
        # A HOME of its own: `config init` writes there, not in the home of whoever runs the tests.
        env = {**os.environ, "PUEUE_WATCHER_CONFIG": str(config), "HOME": str(tmp_path / "home")}
        env.pop("XDG_CONFIG_HOME", None)
        # The store exists once the daemon has run: `history` reads it and never creates one.
        subprocess.run([sys.executable, "-m", "watcher", "once", "-c", str(config)], cwd=REPO, env=env,
                       capture_output=True, timeout=120, check=True)  # fmt: skip
        ran = []
        for command in commands:
            if command.startswith("./dev test"):
                continue  # the test suite itself (CI runs it)
            if command.startswith("pipx install"):
                ran.append(command)  # tests/test_wheel_install.py installs the built wheel as pipx does
                continue
            if command.startswith("./dev run"):
                ran.append(_dev_run())
                continue
            argv = shlex.split(command)
            if argv[0] in (".venv/bin/pueue-watcher", "pueue-watcher"):
                argv = [sys.executable, "-m", "watcher", *argv[1:]]
            elif argv[:3] == ["python", "-m", "watcher"]:
                argv = [sys.executable, *argv[1:]]
            argv = [str(tmp_path / "home" / a[2:]) if a.startswith("~/") else a for a in argv]
            argv = [
                str(config) if a in ("/etc/pueue-watcher/config.toml", "config.toml") else a for a in argv
            ]
            proc = subprocess.run(
                argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
            )
            assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
            assert "Traceback" not in proc.stderr
            if "--json" in argv or argv[-1] == "schema":
                json.loads(proc.stdout)
            ran.append(command)
    assert len(ran) == len([c for c in commands if not c.startswith("./dev test")])


def _dev_run() -> str:
    """`./dev run` on the shipped config.toml: it starts, and SIGINT stops it cleanly."""
    proc = subprocess.Popen(["./dev", "run"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        output = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            output += line
            if '"event": "cycle"' in line or '"event": "host.failing"' in line or "cycle" in line:
                break
        os.killpg(proc.pid, signal.SIGINT)
        output += proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output
    assert "stopped" in output
    return "./dev run"


def test_health_names_the_broken_item(tmp_path: Path) -> None:
    """One dead host and a metrics port held by something else: exit 1, a FAIL line for each."""
    import socket

    from tests.harness.fleet import watcher
    from tests.harness.services import free_port

    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        config = write_config(
            tmp_path / "h.toml",
            [{"name": "dead", "address": "127.0.0.1", "port": free_port()}],
            watcher={"state_path": str(tmp_path / "h.db")},
            metrics={"listen": f"127.0.0.1:{port}"},
        )
        proc = watcher("health", "-c", str(config))
    finally:
        holder.close()
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ok    config:")
    assert any(line.startswith("FAIL  host dead:") and "connection refused" in line for line in lines)
    assert any(line.startswith("FAIL  metrics:") for line in lines)
