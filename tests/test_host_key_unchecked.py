"""``known_hosts = "none"`` is never silent: a warning when the daemon starts, and a line in ``health``."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from structlog.testing import capture_logs

from tests.harness.services import free_port
from watcher.config import Settings, settings_from_mapping
from watcher.daemon import Daemon
from watcher.health import run_health
from watcher.store import Store


def settings_for(tmp_path: Path) -> Settings:
    """Two hosts on a closed port, one with host key verification off."""
    port = free_port()
    hosts = [
        {"name": "trusting", "address": "127.0.0.1", "port": port, "known_hosts": "none"},
        {"name": "checked", "address": "127.0.0.1", "port": port},
    ]
    watcher = {"state_path": str(tmp_path / "state.db"), "connect_timeout": "2s", "grace_period": "1s"}
    return settings_from_mapping({"watcher": watcher, "metrics": {"listen": ""}, "hosts": hosts})


async def test_the_daemon_warns_at_start_for_each_unverified_host(tmp_path: Path) -> None:
    """The start of the daemon logs host.key_unchecked once, for the host with known_hosts = "none" only."""
    settings = settings_for(tmp_path)
    store = await Store.open(settings.watcher.state_path)
    daemon = Daemon(settings, store)
    stop = asyncio.Event()
    stop.set()
    try:
        with capture_logs() as logs:
            await daemon.run(stop)
    finally:
        await daemon.close()
        await store.close()
    warnings = [e for e in logs if e["event"] == "host.key_unchecked"]
    assert [(e["host"], e["log_level"]) for e in warnings] == [("trusting", "warning")]


async def test_health_shows_an_unverified_host(tmp_path: Path) -> None:
    """`health` prints a warn line for the host whose key is not verified, and none for the other."""
    out = io.StringIO()
    await run_health(settings_for(tmp_path), out)
    lines = out.getvalue().splitlines()
    assert 'warn  host trusting: host key not verified (known_hosts = "none")' in lines
    assert not [line for line in lines if line.startswith("warn  host checked")]
