"""A watched host that runs a real pueued: each version × layout × transport (the watcher's own machine, or
a real sshd whose sessions get the host's HOME and $XDG_RUNTIME_DIR, as pam_systemd gives an SSH login)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SSHFactory
from tests.harness.real_pueue import LAYOUTS, VERSIONS, RealPueue, real_pueue
from watcher.config import HostConfig, WatcherSection
from watcher.poll.poller import HostPoller
from watcher.transport import Transport, open_transport


@dataclass
class WatchedHost:
    """A real pueue host and how the watcher reaches it. ``pueue`` is a wrapper that logs every call (argv on
    a line) before it runs the real client: tests count the ``status`` calls."""

    pueue: RealPueue
    config: HostConfig
    calls_log: Path

    def calls(self, verb: str) -> int:
        if not self.calls_log.exists():
            return 0
        return sum(1 for line in self.calls_log.read_text().splitlines() if verb in line.split())

    def transport(self) -> Transport:
        return open_transport(self.config, WatcherSection())

    def poller(self) -> HostPoller:
        return HostPoller(self.config, self.transport(), timeout=30)

    def entry(self) -> dict[str, Any]:
        """The [[hosts]] entry (tests/harness/fleet.write_config) of this host."""
        return {k: v for k, v in self.config.model_dump().items() if v is not None and k != "passphrase"}


def _wrapper(root: Path, real: Path, log: Path) -> Path:
    wrapper = root / "bin" / "pueue"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture(params=[(v, lay, t) for v in VERSIONS for lay in LAYOUTS for t in ("local", "ssh")],
                ids=lambda p: "-".join(p))  # fmt: skip
def watched(
    request: pytest.FixtureRequest, tmp_path: Path, sshd_factory: SSHFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WatchedHost]:
    version, layout, transport = request.param
    with real_pueue(tmp_path / "host", version, layout) as host:
        log = tmp_path / "pueue-calls.log"
        base = {"name": "real", "pueue": str(_wrapper(tmp_path, host.bins.pueue, log)), "probes": False}
        if transport == "local":
            # The local transport runs the poll as the watcher's own child: the host's environment is ours.
            for key in ("HOME", "XDG_RUNTIME_DIR"):
                if key in host.env:
                    monkeypatch.setenv(key, host.env[key])
                else:
                    monkeypatch.delenv(key, raising=False)
            config = HostConfig.model_validate({**base, "transport": "local"})
        else:
            server = sshd_factory.start(host.env)
            config = HostConfig.model_validate({
                **base, "address": "127.0.0.1", "port": server.port, "user": server.user,
                "identity_file": str(server.keys.identity), "known_hosts": str(server.keys.known_hosts),
            })  # fmt: skip
        yield WatchedHost(host, config, log)


@pytest.fixture
async def poller(watched: WatchedHost) -> AsyncIterator[HostPoller]:
    poller = watched.poller()
    yield poller
    await poller.close()
