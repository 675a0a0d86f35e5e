"""The first hour's mistakes (issue 14), through the real CLI against a real sshd: each gives one line that
names the file and the fix, and the exit code a script can act on.

``config validate`` exits 2 for a file the configuration names but this machine lacks; ``status`` exits 1
with the transport's message; ``health`` exits 1 while an alert sink is failing, and names it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SSHFactory
from tests.harness.fleet import sim_env, sim_host, ssh_entry, watcher, write_config
from tests.harness.services import free_port
from tests.harness.sshd import SSHServer
from tests.pueue_sim.scenario import SimHost

pytestmark = pytest.mark.integration


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimHost]:
    with sim_host(tmp_path / "sim", "v4") as host:
        yield host


def fingerprint(server: SSHServer) -> str:
    """The server's host key fingerprint, as ssh-keygen prints it (SHA256:…)."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(server.host_key) + ".pub"], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[1]


def own_known_hosts(server: SSHServer, path: Path) -> Path:
    """A known_hosts of this test's own that trusts ``server`` on its first line."""
    kind, key = (server.root / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    path.write_text(f"[127.0.0.1]:{server.port} {kind} {key}\n")
    return path


@dataclass(frozen=True)
class Expected:
    """What each command must say about a mistake: ``validate`` is the problem after ``config error:
    FILE: host bigblack: `` (None: the configuration is valid), ``status`` the host's exact error."""

    changes: dict[str, Any]  # to the host's entry
    validate: str | None
    status: str


def _missing_identity(server: SSHServer, tmp: Path) -> Expected:
    key = tmp / "id_does_not_exist"
    problem = f"identity_file {key}: no such file"
    return Expected({"identity_file": str(key)}, problem, f"127.0.0.1:{server.port}: {problem}")


def _missing_known_hosts(server: SSHServer, tmp: Path) -> Expected:
    known = tmp / "nowhere" / "known_hosts"
    problem = f"known_hosts {known}: no such file"
    return Expected({"known_hosts": str(known)}, problem, f"127.0.0.1:{server.port}: {problem}")


def _unknown_key(server: SSHServer, tmp: Path) -> Expected:
    known = tmp / "known_hosts"
    known.touch()
    key = f"ssh-ed25519 {fingerprint(server)}"
    scan = f"ssh-keyscan -p {server.port} -t ed25519 127.0.0.1 >> {known}"
    return Expected(
        {"known_hosts": str(known)},
        None,
        f"127.0.0.1:{server.port}: host key unknown: {key} is not in known_hosts; "
        f"if that is the host's key, add it with {scan}",
    )


def _changed_key(server: SSHServer, tmp: Path) -> Expected:
    known = own_known_hosts(server, tmp / "known_hosts")
    server.stop()
    server.rotate_host_key()
    server.start()
    return Expected(
        {"known_hosts": str(known)},
        None,
        f"127.0.0.1:{server.port}: HOST KEY CHANGED, possibly a man in the middle (old key: {known} line 1); "
        f"if the change is expected, remove it with ssh-keygen -R '[127.0.0.1]:{server.port}' -f {known}",
    )


def _wrong_pueue(server: SSHServer, tmp: Path) -> Expected:
    # Without read_state_file, every poll asks the client (the state file alone would answer otherwise).
    return Expected(
        {"pueue": "/nope/pueue", "read_state_file": False},
        None,
        "the pueue client was not found on the host at /nope/pueue",
    )


MISTAKES: dict[str, Callable[[SSHServer, Path], Expected]] = {
    "missing identity file": _missing_identity,
    "missing known_hosts": _missing_known_hosts,
    "unknown host key": _unknown_key,
    "changed host key": _changed_key,
    "wrong pueue path": _wrong_pueue,
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_first_hour_mistake_is_named_in_one_line(
    tmp_path: Path, sshd_factory: SSHFactory, sim: SimHost, mistake: str
) -> None:
    """``config validate`` exits 2 naming a missing local file (0 otherwise), and ``status`` exits 1 with the
    exact one-line error: the file, or the key's case (unknown, changed) and the command that fixes it."""
    server = sshd_factory.start(sim_env(sim))
    expected = MISTAKES[mistake](server, tmp_path)
    entry = ssh_entry("bigblack", server, sim) | expected.changes
    config = write_config(
        tmp_path / "c.toml", [entry], watcher={"state_path": str(tmp_path / "s.db")}, metrics={"listen": ""}
    )

    validate = watcher("config", "validate", str(config))
    if expected.validate is None:
        assert (validate.returncode, validate.stderr) == (0, ""), validate.stderr
    else:
        assert validate.returncode == 2, validate.stdout + validate.stderr
        assert validate.stderr.splitlines() == [f"config error: {config}: host bigblack: {expected.validate}"]
        assert validate.stdout == ""

    status = watcher("status", "--json", "-c", str(config))
    assert status.returncode == 1, status.stdout + status.stderr
    assert "Traceback" not in status.stderr
    (host,) = json.loads(status.stdout)["hosts"]
    assert host["error"] == expected.status


def test_the_printed_commands_fix_an_unknown_and_a_changed_key(
    tmp_path: Path, sshd_factory: SSHFactory, sim: SimHost
) -> None:
    """Run as printed (a shell line), the ssh-keygen -R of a changed key turns it into an unknown one, and
    the ssh-keyscan line of an unknown key lets the next status in."""
    server = sshd_factory.start(sim_env(sim))
    config = write_config(
        tmp_path / "c.toml",
        [ssh_entry("bigblack", server, sim) | _changed_key(server, tmp_path).changes],
        watcher={"state_path": str(tmp_path / "s.db")},
    )

    def status() -> tuple[int, str]:
        proc = watcher("status", "--json", "-c", str(config))
        (host,) = json.loads(proc.stdout)["hosts"]
        return proc.returncode, host["error"] or ""

    code, error = status()
    assert code == 1 and "HOST KEY CHANGED" in error, error
    subprocess.run(["sh", "-c", error.rpartition("remove it with ")[2]], check=True, capture_output=True)
    code, error = status()
    assert code == 1 and "host key unknown" in error, error
    subprocess.run(["sh", "-c", error.rpartition("add it with ")[2]], check=True, capture_output=True)
    assert status() == (0, "")


def test_validate_names_a_missing_local_pueue(tmp_path: Path) -> None:
    """A local host's pueue given as a path is checked on this machine: missing, validate exits 2."""
    pueue = tmp_path / "bin" / "pueue"
    config = write_config(tmp_path / "c.toml", [{"name": "here", "transport": "local", "pueue": str(pueue)}])
    proc = watcher("config", "validate", str(config))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"config error: {config}: host here: pueue {pueue}: no such file"]


def test_health_fails_while_a_webhook_sink_is_down(
    tmp_path: Path, sshd_factory: SSHFactory, sim: SimHost
) -> None:
    """A phase completes while the webhook's port is closed: ``once`` exits 1 after delivery.failed, and
    ``health`` exits 1 with a FAIL line that names the sink, its last error and what waits; the host is ok."""
    sim.pueue("group", "add", "btc-yearly", check=True)
    task = sim.add_gated("y2021", group="btc-yearly", label="y2021")
    server = sshd_factory.start(sim_env(sim))
    entry = ssh_entry("bigblack", server, sim)
    config = tmp_path / "c.toml"
    config.write_text(
        f'[watcher]\nstate_path = "{tmp_path / "s.db"}"\n[metrics]\nlisten = ""\n[[hosts]]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in entry.items())
        + f'[[alerts]]\nname = "ops"\nkind = "webhook"\nurl = "http://127.0.0.1:{free_port()}/hook"\n'
        'timeout = "1s"\n'
    )
    first = watcher("once", "-c", str(config))
    assert first.returncode == 0, first.stdout + first.stderr  # nothing to deliver yet
    healthy = watcher("health", "-c", str(config))
    assert healthy.returncode == 0, healthy.stdout
    assert "ok    sink ops: nothing sent yet\n" in healthy.stdout

    sim.finish("y2021")
    sim.wait_for_status(task, "Done")
    second = watcher("once", "-c", str(config))
    assert second.returncode == 1, second.stdout + second.stderr
    assert '"delivery.failed"' in second.stdout

    health = watcher("health", "-c", str(config))
    assert health.returncode == 1, health.stdout
    (sink,) = [line for line in health.stdout.splitlines() if "sink ops" in line]
    assert sink.startswith("FAIL  sink ops: failing: last delivery failed at "), sink
    assert sink.endswith("; 1 undelivered (1 pending, 0 failed for good)"), sink
    assert "connect" in sink.lower(), sink  # the transport's reason, without the URL's secrets
    assert [line for line in health.stdout.splitlines() if line.startswith("FAIL")] == [sink]
