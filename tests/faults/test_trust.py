"""Trust (issue 8, point 2): a host's key changes, as a man in the middle's would, under a running daemon.

The connection is refused, an alert (``host.down``) says why, later polls keep refusing, the daemon never
starts trusting the new key, and the known_hosts file is left as it was. The default configuration (no
``known_hosts`` for the host) verifies against ``~/.ssh/known_hosts`` of a HOME made for the test, never the
real one of this machine; a ``~/.ssh/config`` cannot turn that verification off either.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.faults.ledger import Ledger
from tests.faults.netns import Rig, rig
from tests.harness.fleet import watcher, write_config
from tests.harness.sshd import SSHServer

pytestmark = pytest.mark.integration

REFUSED = "HOST KEY CHANGED"


def logins(server: SSHServer) -> int:
    """How many times the server let the watcher in, over every run of this sshd (its log is appended)."""
    return (server.root / "sshd.log").read_text(errors="replace").count("Accepted publickey")


def man_in_the_middle(server: SSHServer) -> None:
    """Every connection drops, and what answers at the same address and port afterwards has another key."""
    server.drop_connections()
    server.rotate_host_key()
    server.start()


def _polled(r: Rig, host: str, n: int) -> None:
    r.wait(lambda: r.metrics.ok(host) >= n)


def test_a_changed_host_key_is_refused_alerted_and_never_trusted(tmp_path: Path, ledger: Ledger) -> None:
    """After the key changes, every poll is refused for the key, host.down carries that reason at the first
    refusal, no login ever happens again, and known_hosts is byte for byte what it was."""
    with rig(tmp_path) as r:
        sim = r.sim("gpu")
        sim.start_daemon()
        sim.add("true")
        server = r.sshd("gpu", sim)
        r.start([r.entry("gpu", server, sim)], connect_timeout="5s", down_after=3)
        known = r.keys.known_hosts
        before = (known.read_bytes(), known.stat().st_mtime_ns)
        with ledger.fault("host key changed (man in the middle)"):
            _polled(r, "gpu", 2)  # the poll session is open on the trusted connection
            ok = r.metrics.ok("gpu")
            let_in = logins(server)
            man_in_the_middle(server)
            first = r.wait(lambda: r.log("host.failing", "gpu"))[0]
            assert first["reason"] == "host_key", first
            assert REFUSED in first["error"], first
            (down,) = r.wait(lambda: r.received_of("host.down", "gpu"))
            assert down["reason"] == "host_key", down
            assert down["failures"] == 1, down  # at the first refusal, not after down_after (3) polls
            assert REFUSED in down["error"] and REFUSED in down["summary"], down
            # Later polls: refused again, for the same reason, with nothing let through in between.
            r.wait(lambda: r.metrics.failures("gpu").get("host_key", 0) >= 3 + 3)
            assert set(r.metrics.failures("gpu")) == {"host_key"}
            assert r.metrics.ok("gpu") == ok
            assert logins(server) == let_in, "the watcher logged in to the new key"
            assert not r.received_of("host.up") and not r.log("host.recovered")
            assert (known.read_bytes(), known.stat().st_mtime_ns) == before, "known_hosts was modified"
        r.account(ledger)
        assert len(r.received_of("host.down")) == 1


def _status(config: Path, home: Path) -> tuple[int, dict[str, Any]]:
    """``pueue-watcher status --json`` as a user whose home is ``home``."""
    proc = watcher("status", "--json", "-c", str(config), env={**os.environ, "HOME": str(home)})
    (host,) = json.loads(proc.stdout)["hosts"]
    return proc.returncode, host


@pytest.mark.parametrize("ssh_config", ["", "Host *\n  UserKnownHostsFile none\n"], ids=["plain", "off"])
def test_default_known_hosts_is_the_users_and_is_enforced(
    tmp_path: Path, ledger: Ledger, ssh_config: str
) -> None:
    """With no known_hosts configured, the key is checked against ~/.ssh/known_hosts (of a test HOME): the
    right key is let in, a changed one refused, the file untouched, and ~/.ssh/config cannot disable it."""
    with rig(tmp_path) as r:
        sim = r.sim("gpu")
        sim.start_daemon()
        sim.add("true")
        server = r.sshd("gpu", sim)
        home = tmp_path / "home"
        (home / ".ssh").mkdir(parents=True)
        users = home / ".ssh" / "known_hosts"
        shutil.copy(r.keys.known_hosts, users)  # the server's line, under the address it listens on
        (home / ".ssh" / "config").write_text(ssh_config)
        entry = r.entry("gpu", server, sim)
        del entry["known_hosts"]
        config = write_config(
            tmp_path / "default.toml", [entry], watcher={"state_path": str(tmp_path / "d.db")}
        )
        before = users.read_bytes()
        with ledger.fault(f"host key changed, default known_hosts ({'off' if ssh_config else 'plain'})"):
            if not ssh_config:
                code, host = _status(config, home)
                assert (code, host["ok"]) == (0, True), host
            let_in = logins(server)
            man_in_the_middle(server)
            for _ in range(2):  # a second run refuses again: nothing was learnt from the first
                code, host = _status(config, home)
                assert (code, host["ok"]) == (1, False), host
                # ~/.ssh/config turning verification off is refused before any key is looked at.
                assert ("UserKnownHostsFile none" if ssh_config else REFUSED) in host["error"], host
                assert ("UserKnownHostsFile" in host["error"]) == bool(ssh_config), host
            assert logins(server) == let_in
            assert users.read_bytes() == before
