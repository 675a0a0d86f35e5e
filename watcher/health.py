"""``pueue-watcher health``: one line per item (configuration, each host's local files, state store, each
alert sink's deliveries, each host's SSH and pueue, each ClickHouse, the metrics port), and a non-zero exit
when any item is broken. For operators' own checks.

A sink is judged from the store, as the daemon left it (health sends nothing): it is failing while its last
delivery attempt failed or events wait to be tried again, which is when alerts are not reaching anyone."""

from __future__ import annotations

import socket
import urllib.request
from typing import TextIO

from watcher.config import Settings
from watcher.errors import StoreError, StoreMissing
from watcher.fleet import Fleet
from watcher.preflight import problems
from watcher.render import clean, human_bytes
from watcher.runtime import Runtime
from watcher.store.queries import SinkDeliveries


async def run_health(settings: Settings, out: TextIO) -> int:
    failures = 0

    def line(ok: bool, item: str, detail: str) -> None:
        nonlocal failures
        failures += not ok
        out.write(f"{'ok  ' if ok else 'FAIL'}  {item}: {clean(detail, 400)}\n")

    line(True, "config", counts(settings))
    missing = problems(settings.hosts)
    for problem in missing:
        line(False, f"host {problem.host}", problem.message)
    async with Runtime(settings) as runtime:  # the store is closed before any host is reached
        try:
            store = await runtime.read_store()  # health only reads
        except StoreMissing:  # no daemon has run with this configuration yet: nothing is wrong with that
            created = f"{settings.watcher.state_path}: not created yet (the daemon creates it)"
            line(True, "state store", created)
        except StoreError as exc:
            line(False, "state store", str(exc))
        else:
            try:
                deliveries = {d.sink: d for d in await store.sink_deliveries()}
            except StoreError as exc:
                line(False, "state store", str(exc))
            else:
                line(True, "state store", settings.watcher.state_path)
                for name in [a.name for a in settings.alerts] or ["console"]:
                    ok, detail = _sink(deliveries.get(name))
                    line(ok, f"sink {name}", detail)

    async with Runtime(settings) as runtime:
        # A host whose files are missing was reported above: connecting would only say it again.
        hosts = [h for h in settings.hosts if h.name not in {p.host for p in missing}]
        transports = runtime.transports(hosts)
        fleet = Fleet(settings, hosts, transports)
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
        handles = runtime.clickhouse(transports)
        for config in settings.clickhouse:
            try:
                client = await handles.get(config.name)
                await client.query("SELECT 1")
            except Exception as exc:  # any failure is this item's, reported in one line
                line(False, f"clickhouse {config.name}", str(exc))
            else:
                line(True, f"clickhouse {config.name}", f"{config.host}:{config.port} answers")

    ok, detail = _metrics_port(settings.metrics.listen)
    line(ok, "metrics", detail)
    return 0 if failures == 0 else 1


def _sink(state: SinkDeliveries | None) -> tuple[bool, str]:
    """(ok, detail) of one sink: its last attempt and what waits."""
    if state is None:
        return True, "nothing sent yet"
    waiting = f"{state.pending + state.failed} undelivered"
    if state.pending or state.failed:
        waiting += f" ({state.pending} pending, {state.failed} failed for good)"
    if state.last_status not in (None, "delivered") or state.retrying:
        when = _when(state.last_at)
        return False, f"failing: last delivery failed {when}: {state.last_error or 'no message'}; {waiting}"
    if state.last_delivered_at is None:
        return True, f"not tried yet; {waiting}"
    return True, f"last delivered {_when(state.last_delivered_at)}; {waiting}"


def _when(at: str | None) -> str:
    """The store's UTC timestamp, to the second."""
    return "at an unknown time" if at is None else f"at {at[:19].replace('T', ' ')} UTC"


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


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def counts(settings: Settings) -> str:
    """ "1 host, 2 checks, 0 sinks"."""
    return ", ".join((plural(len(settings.hosts), "host"), plural(len(settings.checks), "check"),
                      plural(len(settings.alerts), "sink")))  # fmt: skip
