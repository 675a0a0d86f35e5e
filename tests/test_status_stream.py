"""``status`` shows each host as it answers, and Ctrl-C keeps what has come in (issue 14): a host that hangs
(a port that accepts and never speaks SSH) holds up only its own block."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SSHFactory
from tests.harness.fleet import REPO, sim_env, sim_host, ssh_entry, write_config

pytestmark = pytest.mark.integration


def test_a_hanging_host_holds_up_only_itself_and_ctrl_c_keeps_the_rest(
    tmp_path: Path, sshd_factory: SSHFactory
) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers: an SSH connect that hangs
    try:
        with sim_host(tmp_path / "sim", "v4") as sim:
            sim.pueue("group", "add", "p1", check=True)
            server = sshd_factory.start(sim_env(sim))
            hosts = [
                {"name": "slow", "address": "127.0.0.1", "port": silent.getsockname()[1]},
                ssh_entry("fast", server, sim),
            ]
            config = write_config(tmp_path / "c.toml", hosts, watcher={"connect_timeout": "120s",
                                  "host_timeout": "120s"}, metrics={"listen": ""})  # fmt: skip
            with subprocess.Popen([sys.executable, "-m", "watcher", "status", "-c", str(config)], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:  # fmt: skip
                assert proc.stdout is not None and proc.stderr is not None
                first = proc.stdout.readline()  # the fast host's block, while the slow one hangs
                block = [first]
                while "p1" not in block[-1]:
                    block.append(proc.stdout.readline())
                time.sleep(0.5)
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)
                errors = proc.stderr.read()
    finally:
        silent.close()
    assert first.startswith("fast  ok"), block
    assert proc.returncode == 130
    assert errors.strip().splitlines()[-1] == "interrupted: no answer yet from slow"
    assert "Traceback" not in errors
