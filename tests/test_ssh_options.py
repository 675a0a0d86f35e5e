"""What the SSH transport asks of asyncssh, whatever ~/.ssh/config says (no server: options only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncssh
import pytest

from watcher.config import HostConfig
from watcher.transport.ssh import SSHTransport

HOSTILE_CONFIG = """\
Host *
  ForwardAgent yes
  ForwardX11 yes
  ForwardX11Trusted yes
  SendEnv LANG PUEUE_WATCHER__*
  SetEnv FROM_CONFIG=1
  RequestTTY force
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").touch()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    return home


async def resolved_for(name: str, home: Path) -> Any:
    """The options asyncssh would connect with for host ``name``, as the transport builds them."""
    host = HostConfig(name=name, known_hosts=str(home / ".ssh" / "known_hosts"))
    transport = SSHTransport(host, connect_timeout=5, keepalive=30)
    options = await transport._connect_options()
    return await asyncssh.SSHClientConnectionOptions.construct(config=(), host=name, **options)


async def test_ssh_config_cannot_forward_the_agent_x11_or_the_environment(home: Path) -> None:
    """ForwardAgent, ForwardX11, SendEnv, SetEnv and RequestTTY in ~/.ssh/config are all overridden."""
    (home / ".ssh" / "config").write_text(HOSTILE_CONFIG)
    resolved = await resolved_for("bigblack", home)
    assert resolved.config.get("ForwardAgent") is True  # the config was read
    assert resolved.agent_forward_path is None
    assert not resolved.x11_forwarding
    assert not resolved.send_env
    assert not resolved.env
    assert resolved.request_pty is False


async def test_sha1_algorithms_are_not_offered(home: Path) -> None:
    """No SHA-1 key exchange, no ssh-rsa signatures and no hmac-sha1 unless ~/.ssh/config asks."""
    resolved = await resolved_for("bigblack", home)
    assert resolved.kex_algs and not [alg for alg in resolved.kex_algs if alg.endswith(b"-sha1")]
    assert resolved.mac_algs and not [alg for alg in resolved.mac_algs if alg.startswith(b"hmac-sha1")]
    assert b"ssh-rsa" not in resolved.signature_algs
    assert b"rsa-sha2-256" in resolved.signature_algs


async def test_a_host_whose_ssh_config_names_legacy_algorithms_keeps_them(home: Path) -> None:
    """An old host's own KexAlgorithms/MACs entry is the operator's choice and is kept; others get none."""
    (home / ".ssh" / "config").write_text(
        "Host oldbox\n  KexAlgorithms +diffie-hellman-group14-sha1\n  MACs +hmac-sha1\n"
    )
    old = await resolved_for("oldbox", home)
    assert b"diffie-hellman-group14-sha1" in old.kex_algs
    assert b"hmac-sha1" in old.mac_algs
    other = await resolved_for("bigblack", home)
    assert b"diffie-hellman-group14-sha1" not in other.kex_algs
