"""A watched host that is compromised (issue 13, H1 and H3), through the real watcher and a real sshd.

Each host runs a hostile script in place of the poll script: a forced command in ``authorized_keys``
(``command="…"``, which sshd runs whatever the client asked for), switched by the ``HOSTILE`` variable that
each sshd sets in its sessions. ``python -m watcher once`` then polls those hosts as it would any other.

* A host that answers ``handoff PATH`` must not get the watcher to open PATH on the watcher's machine: not a
  pueue-shaped file (whose group names would become that host's snapshot), not a FIFO (which would block a
  worker thread).
* A host that floods stderr (256 MiB of ``"\\xff\\n"``) must cost the watcher no more memory than a host that
  says one line: stderr is drained, and only its head and tail are kept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES
from tests.faults.ledger import Ledger
from tests.harness.fleet import REPO, ssh_entry, write_config
from tests.harness.sshd import ClientKeys, SSHServer

pytestmark = pytest.mark.integration

# What each host answers, whatever it was asked. $TARGET is a path on the watcher's machine (one machine
# here: the test plays both sides).
HOSTILE_SCRIPT = r"""#!/bin/sh
marker='pueue-watcher-poll 1'
case $HOSTILE in
handoff) printf '%s\nfile state.json 10 1.5 7\ndaemon up\nhandoff %s\n' "$marker" "$TARGET";;
flood) yes "$(printf '\377')" | head -c 268435456 >&2
printf '%s\ndaemon down\nstatus none\n' "$marker"; printf 'Error: flooded\npueue-watcher-rc 1\n' >&2;;
quiet) printf '%s\ndaemon down\nstatus none\n' "$marker"; printf 'Error: quiet\npueue-watcher-rc 1\n' >&2;;
esac
"""

STOLEN = "stolen-group-3f9a1c"  # the group name of the file on the watcher's machine


def hostile_hosts(
    root: Path, modes: dict[str, dict[str, str]]
) -> tuple[list[SSHServer], list[dict[str, Any]]]:
    """One sshd per host, each forcing HOSTILE_SCRIPT on every session, with that host's environment."""
    keys = ClientKeys(root / "keys")
    script = root / "hostile.sh"
    script.write_text(HOSTILE_SCRIPT)
    script.chmod(0o755)
    public = keys.authorized_keys.read_text().strip()
    keys.authorized_keys.write_text(f'command="{script}",no-pty,no-agent-forwarding {public}\n')
    servers, entries = [], []
    for name, env in modes.items():
        server = SSHServer(root / name, keys, env).start()
        servers.append(server)
        entries.append(ssh_entry(name, server, None, pueue="pueue", compression="none"))
    return servers, entries


def once_with_rss(config: Path) -> tuple[int, str, int]:
    """``python -m watcher once``: its exit code, its output (log included), and its peak RSS in KiB (wait4
    gives this child's own usage, not that of every child the test run has waited for)."""
    proc = subprocess.Popen([sys.executable, "-m", "watcher", "once", "-c", str(config)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    guard = threading.Timer(300, proc.kill)  # a hang guard, not a measure
    guard.start()
    try:
        assert proc.stdout is not None
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        guard.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    return proc.returncode, output.decode(errors="replace"), usage.ru_maxrss


def test_a_handoff_to_a_local_file_or_fifo_is_refused(tmp_path: Path, ledger: Ledger) -> None:
    """Hosts that answer a handoff to a pueue-shaped file and to a FIFO on the watcher's machine get a
    one-line error each, the file's content appears nowhere, and the run ends."""
    secret = tmp_path / "secret" / "state.json"
    secret.parent.mkdir()
    state = json.loads((FIXTURES / "v4_status.json").read_text())
    state["groups"][STOLEN] = next(iter(state["groups"].values()))
    secret.write_text(json.dumps(state))  # a real pueue state, which the host would then own
    fifo = tmp_path / "secret" / "fifo.json"
    os.mkfifo(fifo)
    servers, hosts = hostile_hosts(
        tmp_path,
        {"stealer": {"HOSTILE": "handoff", "TARGET": str(secret)},
         "blocker": {"HOSTILE": "handoff", "TARGET": str(fifo)}},
    )  # fmt: skip
    config = write_config(
        tmp_path / "c.toml", hosts, watcher={"state_path": str(tmp_path / "state.db")}, metrics={"listen": ""}
    )
    with ledger.fault("handoff to a local file and a FIFO over SSH", count=2):
        try:
            ledger.hostile(2)
            code, output, _ = once_with_rss(config)
        finally:
            for server in servers:
                server.stop()
        refusal = "the host answered a local-file handoff over SSH"
        assert output.count(refusal) >= 2, output
        assert code != 0
        assert STOLEN not in output
        for path in tmp_path.glob("state.db*"):
            assert STOLEN.encode() not in path.read_bytes(), path


def test_256_mib_of_stderr_costs_no_more_memory_than_one_line(tmp_path: Path, ledger: Ledger) -> None:
    """A host that writes 256 MiB to stderr is reported with pueue's one-line error, and the watcher's peak
    RSS stays within 64 MiB of a run against a host that writes one line."""
    servers, hosts = hostile_hosts(tmp_path, {"flooder": {"HOSTILE": "flood"}, "quiet": {"HOSTILE": "quiet"}})
    flood_hosts, quiet_hosts = [hosts[0]], [hosts[1]]
    watcher_section = {"state_path": str(tmp_path / "state.db"), "host_timeout": "240s"}
    flood_config = write_config(tmp_path / "flood.toml", flood_hosts, watcher=watcher_section,
                                metrics={"listen": ""})  # fmt: skip
    quiet_config = write_config(tmp_path / "quiet.toml", quiet_hosts, watcher=watcher_section,
                                metrics={"listen": ""})  # fmt: skip
    with ledger.fault("256 MiB of stderr"):
        try:
            ledger.hostile()
            _, quiet_output, quiet_rss = once_with_rss(quiet_config)
            _, flood_output, flood_rss = once_with_rss(flood_config)
        finally:
            for server in servers:
                server.stop()
        print(f"peak RSS: quiet host {quiet_rss >> 10} MiB, 256 MiB of stderr {flood_rss >> 10} MiB")
        assert "pueue status failed (exit 1): quiet" in quiet_output, quiet_output
        assert "pueue status failed (exit 1)" in flood_output, flood_output[-2000:]
        assert max(len(line) for line in flood_output.splitlines()) < 2000
        assert flood_rss < quiet_rss + (64 << 10), (quiet_rss, flood_rss)
