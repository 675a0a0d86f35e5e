"""``pueue-watcher health``: one line per item (configuration, state store, each host's SSH and pueue, each
ClickHouse, the metrics port), and a non-zero exit when any item is broken. For operators' own checks."""

from __future__ import annotations

import socket
import urllib.request
from typing import TextIO

from watcher.checking import ClickHouseHandles
from watcher.config import Settings
from watcher.errors import StoreError
from watcher.fleet import Fleet
from watcher.render import clean, human_bytes
from watcher.store import Store


async def run_health(settings: Settings, out: TextIO) -> int:
    failures = 0

    def line(ok: bool, item: str, detail: str) -> None:
        nonlocal failures
        failures += not ok
        out.write(f"{'ok  ' if ok else 'FAIL'}  {item}: {clean(detail, 200)}\n")

    line(
        True,
        "config",
        f"{len(settings.hosts)} hosts, {len(settings.checks)} checks, {len(settings.alerts)} sinks",
    )
    try:
        store = await Store.open(settings.watcher.state_path)
    except StoreError as exc:
        line(False, "state store", str(exc))
    else:
        await store.close()
        line(True, "state store", settings.watcher.state_path)

    fleet = Fleet(settings)
    try:
        for result in await fleet.poll():
            host = next(h for h in settings.hosts if h.name == result.host)
            if host.host_key_unchecked:
                # Shown, not failed: the operator chose it, but any man in the middle is this host now.
                out.write(f'warn  host {result.host}: host key not verified (known_hosts = "none")\n')
            if result.ok and result.snapshot is not None:
                size = (
                    ""
                    if result.state_file_bytes is None
                    else f", state file {human_bytes(result.state_file_bytes)}"
                )
                line(
                    True, f"host {result.host}", f"pueue answers, {len(result.snapshot.groups)} groups{size}"
                )
            else:
                line(False, f"host {result.host}", result.error or "no answer")
        handles = ClickHouseHandles(settings, {name: p.transport for name, p in fleet.pollers.items()})
        try:
            for config in settings.clickhouse:
                try:
                    client = await handles.get(config.name)
                    await client.query("SELECT 1")
                except Exception as exc:  # any failure is this item's, reported in one line
                    line(False, f"clickhouse {config.name}", str(exc))
                else:
                    line(True, f"clickhouse {config.name}", f"{config.host}:{config.port} answers")
        finally:
            await handles.close()
    finally:
        await fleet.close()

    ok, detail = _metrics_port(settings.metrics.listen)
    line(ok, "metrics", detail)
    return 0 if failures == 0 else 1


def _metrics_port(listen: str) -> tuple[bool, str]:
    """Free to bind, or already serving a watcher's /healthz; anything else holding it is a failure."""
    if not listen:
        return True, "disabled"
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_server((host, int(port))):
            return True, f"{listen} is free"
    except OSError as exc:
        try:
            with urllib.request.urlopen(f"http://{listen}/healthz", timeout=3) as answer:
                if answer.status == 200:
                    return True, f"{listen} is served by a running watcher"
        except OSError:
            pass
        return False, f"{listen}: {exc.strerror or exc}"
