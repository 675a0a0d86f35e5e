"""The SSH transport against real sshd servers: reuse, reconnect, ~/.ssh/config with ProxyJump, host keys."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import SSHFactory
from tests.harness.fleet import sim_env, sim_host, ssh_entry, watcher, write_config
from tests.harness.sshd import SSHServer
from watcher.config import HostConfig
from watcher.errors import HostKeyRejected
from watcher.poll.poller import HostPoller
from watcher.transport.ssh import SSHTransport

pytestmark = pytest.mark.integration


def transport_for(entry: dict) -> SSHTransport:  # type: ignore[type-arg]
    return SSHTransport(HostConfig.model_validate(entry), connect_timeout=10, keepalive=30)


async def test_one_connection_is_reused_and_reopened_after_a_drop(
    tmp_path: Path, sshd_factory: SSHFactory
) -> None:
    """Polls share one connection; when the host drops it (a reboot), the next poll reconnects by itself."""
    with sim_host(tmp_path / "h", "v4") as sim:
        sim.add("true")
        server = sshd_factory.start(sim_env(sim))
        entry = ssh_entry("h", server, sim)
        poller = HostPoller(HostConfig.model_validate(entry), transport_for(entry), timeout=20)
        try:
            first = await poller.poll()
            second = await poller.poll()
            assert first.ok
            assert second.source == "unchanged"
            log = (server.root / "sshd.log").read_text()
            assert log.count("Accepted publickey") == 1  # two polls, one login
            server.drop_connections()
            (server.root / "sshd.log").rename(server.root / "sshd.log.before")
            server.start()
            third = await poller.poll()
            assert third.ok, third.error
            assert third.source == "unchanged"  # the state did not change: the fingerprint still holds
            # The restarted sshd's fresh log shows the new login.
            assert (server.root / "sshd.log").read_text().count("Accepted publickey") == 1
        finally:
            await poller.close()


async def test_a_changed_host_key_is_refused(tmp_path: Path, sshd_factory: SSHFactory) -> None:
    """A key other than the one known_hosts lists is refused as changed, naming the file."""
    server = sshd_factory.start()
    server.stop()
    server.rotate_host_key()
    server.start()
    transport = transport_for(ssh_entry("h", server, None))
    known = re.escape(str(server.keys.known_hosts))
    with pytest.raises(HostKeyRejected, match=rf"HOST KEY CHANGED, .*\(old key: {known} line \d+\)"):
        await transport.run(["true"], timeout=10)
    await transport.close()


async def test_unknown_host_is_refused_without_known_hosts_entry(
    tmp_path: Path, sshd_factory: SSHFactory
) -> None:
    """Verification is on by default: an empty known_hosts file trusts nobody."""
    server = sshd_factory.start()
    empty = tmp_path / "empty_known_hosts"
    empty.touch()
    transport = transport_for(ssh_entry("h", server, None, known_hosts=str(empty)))
    with pytest.raises(HostKeyRejected, match=f"host key unknown: .* >> {re.escape(str(empty))}$"):
        await transport.run(["true"], timeout=10)


def test_ssh_config_alias_and_proxyjump(tmp_path: Path, sshd_factory: SSHFactory) -> None:
    """An address that is an alias in ~/.ssh/config, reached through a ProxyJump host, as `ssh` would."""
    with sim_host(tmp_path / "h", "v3") as sim:
        sim.add("true")
        sim.wait_for_status(0, "Done")
        target = sshd_factory.start(sim_env(sim))
        jump = sshd_factory.start()
        home = tmp_path / "home"
        (home / ".ssh").mkdir(parents=True)
        shutil.copy(target.keys.identity, home / ".ssh" / "id_ed25519")
        shutil.copy(target.keys.known_hosts, home / ".ssh" / "known_hosts")
        (home / ".ssh" / "config").write_text(
            f"Host bastion\n  HostName 127.0.0.1\n  Port {jump.port}\n  User {jump.user}\n\n"
            f"Host bigblack\n  HostName 127.0.0.1\n  Port {target.port}\n  User {target.user}\n"
            "  ProxyJump bastion\n"
        )
        entry = {"name": "bigblack", "pueue": str(sim.pueue_bin), "pueue_dir": str(sim.pueue_dir)}
        config = write_config(tmp_path / "c.toml", [entry])
        proc = watcher("status", "--json", "-c", str(config), env={**os.environ, "HOME": str(home)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (host,) = json.loads(proc.stdout)["hosts"]
    assert host["groups"][0]["tasks"]["success"] == 1
    jump_log = (jump.root / "sshd.log").read_text()
    assert "Accepted publickey" in jump_log  # the login went through the jump host


def kill_poll_sessions(server: SSHServer) -> None:
    """SIGKILL the poll-session shells of this server (not those of other tests on the machine)."""
    import signal

    from tests.harness.sshd import _descendants

    assert server.proc is not None
    for pid in _descendants(server.proc.pid):
        with contextlib.suppress(OSError):
            if b"pueue-watcher-session" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


async def test_unchanged_polls_go_through_one_long_lived_session(
    tmp_path: Path, sshd_factory: SSHFactory
) -> None:
    """After the first full read, an unchanged poll is a request to the host's session (no new SSH
    session, no login shell); a change, or a lost session, falls back to the one-shot script, and the
    session reopens."""
    import re

    def sessions() -> int:
        log = (server.root / "sshd.log").read_bytes()
        return len(re.findall(rb"Starting session: command", log))

    with sim_host(tmp_path / "h", "v4") as sim:
        sim.add("true", stashed=True)  # stashed: it never runs, so only the test changes the state file
        server = sshd_factory.start(sim_env(sim))
        entry = ssh_entry("h", server, sim)
        poller = HostPoller(HostConfig.model_validate(entry), transport_for(entry), timeout=20)
        try:
            assert (await poller.poll()).source == "state"
            unchanged = [await poller.poll() for _ in range(5)]
            assert [r.source for r in unchanged] == ["unchanged"] * 5
            assert all(r.probes is not None and r.probes.load1 is not None for r in unchanged)
            assert all(r.daemon_up for r in unchanged)
            assert sessions() == 2  # the first full read, then the one session for five polls

            sim.add("true", stashed=True)  # the state file changes
            changed = await poller.poll()
            assert changed.ok, changed.error
            assert changed.source == "state"
            assert changed.snapshot is not None and len(changed.snapshot.tasks) == 2
            assert sessions() == 3  # the session said "changed"; the one-shot script fetched the state

            # The session's shell dies on the host: the next poll falls back to the script, then reopens it.
            kill_poll_sessions(server)
            after = [await poller.poll() for _ in range(3)]
            assert [r.source for r in after] == ["unchanged"] * 3, [r.error for r in after]
            assert sessions() <= 5
        finally:
            await poller.close()


async def test_a_clean_is_deferred_when_the_state_changed_since_its_plan(
    tmp_path: Path, sshd_factory: SSHFactory
) -> None:
    """`pueue clean` runs only while the state file is the one the plan saw: a task added (or finished) in
    between defers the clean, and nothing is removed until a plan has seen it."""
    from datetime import UTC, datetime

    from watcher.config import HygieneSection
    from watcher.hygiene import Hygiene
    from watcher.records import CleanRecord

    with sim_host(tmp_path / "h", "v4") as sim:
        done = sim.add("true", group="default")
        sim.wait_for_status(done, "Done")
        server = sshd_factory.start(sim_env(sim))
        entry = ssh_entry("h", server, sim)
        host = HostConfig.model_validate(entry)
        poller = HostPoller(host, transport_for(entry), timeout=20)
        hygiene = Hygiene(HygieneSection(max_state_bytes=1))
        plan = CleanRecord(host="h", at=datetime.now(UTC), groups=["default"], mode="successful",
                           dry_run=False, bytes_before=None, bytes_after=None, removed={},
                           failed_labels={})  # fmt: skip
        try:
            assert (await poller.poll()).ok
            seen = poller.fingerprint
            assert seen
            later = sim.add("true", group="default", stashed=True)  # the queue changes after the plan
            assert not await hygiene.clean(host, poller.transport, plan, 20, seen)
            assert set(sim.state()["tasks"]) == {str(done), str(later)}, "nothing may be removed"
            assert (await poller.poll()).source == "state"
            assert await hygiene.clean(host, poller.transport, plan, 20, poller.fingerprint or "")
            assert set(sim.state()["tasks"]) == {str(later)}
        finally:
            await poller.close()


async def test_ssh_config_forwards_neither_the_agent_nor_the_environment(
    tmp_path: Path, sshd_factory: SSHFactory, ssh_agent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ForwardAgent, ForwardX11, SendEnv and SetEnv in ~/.ssh/config, a session gets none of them."""
    import asyncssh

    server = SSHServer(
        sshd_factory.root / "accepting",
        sshd_factory.keys,
        {},
        extra_config=("AcceptEnv *", "AllowAgentForwarding yes", "X11Forwarding yes"),
    ).start()
    sshd_factory.servers.append(server)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        "Host *\n  ForwardAgent yes\n  ForwardX11 yes\n  ForwardX11Trusted yes\n"
        "  SendEnv WATCHER_TEST_*\n  SetEnv WATCHER_TEST_SET=from-config\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SSH_AUTH_SOCK", str(ssh_agent))
    monkeypatch.setenv("WATCHER_TEST_SECRET", "hunter2")
    monkeypatch.setenv("DISPLAY", ":99")
    entry = ssh_entry("h", server, None)
    # The control: plain asyncssh on the same config forwards the agent and passes the variables.
    async with asyncssh.connect(
        "127.0.0.1",
        port=server.port,
        username=server.user,
        client_keys=[entry["identity_file"]],
        known_hosts=entry["known_hosts"],
    ) as conn:
        control = (await conn.run("env", check=True)).stdout
    assert "SSH_AUTH_SOCK=" in str(control)
    assert "WATCHER_TEST_SECRET=hunter2" in str(control)
    transport = transport_for(entry)
    try:
        result = await transport.run(["env"], timeout=10)
    finally:
        await transport.close()
    assert result.exit_status == 0
    session = bytes(result.stdout).decode()
    assert "HOME=" in session  # the session's environment was read
    for forbidden in ("SSH_AUTH_SOCK=", "WATCHER_TEST_", "DISPLAY="):
        assert forbidden not in session
