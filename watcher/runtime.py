"""What a command holds open, in one place: the state store, the hosts' transports and the ClickHouse handles
of ``run``, ``once``, ``check``, ``health`` and ``history``.

A :class:`Runtime` is an ``AsyncExitStack``: each resource is registered as soon as it is opened, and every
one is closed when the ``async with`` block ends, however it ends (a result, an exception, a resource that
failed to open after others had been). They are closed in the reverse order of their opening, which the
commands keep: the store, then the transports, then the handles, so that the handles close first (a
ClickHouse client may reach its server through a tunnel over a host's transport), then the transports, and
the store last (its close flushes what the others recorded, and releases its lock).

The store comes in two kinds:

- ``run`` and ``once`` (:meth:`Runtime.daemon_store`) create it when it is missing and hold its lock
  (``watcher/store/lock.py``): one of them at a time per store.
- ``check``, ``health`` and ``history`` (:meth:`Runtime.read_store`) only read: they never create a store and
  never take the lock, and a missing one raises ``StoreMissing``.

A command that needs the store for less time than its other resources (``check`` reads one phase, ``health``
the sinks' deliveries, before they reach any host) opens it in a Runtime of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Self

import structlog

from watcher.clickhouse_handles import ClickHouseHandles
from watcher.config import HostConfig, Settings
from watcher.errors import StoreError
from watcher.store import Store
from watcher.transport import Transport, open_transport

log = structlog.get_logger("watcher")

STORE_RETRY = (1.0, 60.0)  # the first and the longest wait before opening a temporarily unusable store again


class Runtime:
    """The resources of one command, closed together (``async with Runtime(settings) as rt``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        await self._stack.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._stack.__aexit__(kind, exc, tb)

    async def read_store(self) -> Store:
        """The store of a read-only command: never created, never locked. StoreMissing when there is none,
        StoreError when it cannot be used."""
        return await self._store(create=False, exclusive=False)

    async def daemon_store(self, stop: asyncio.Event | None = None) -> Store | None:
        """The store of ``run`` and ``once``: created when missing, and locked. None after one line saying
        why not. Given ``stop`` (the daemon), a temporary failure (a full disk, a lock held too long) is
        retried, with backoff, until it clears or ``stop`` is set."""
        wait, failing = STORE_RETRY[0], None
        while True:
            try:
                store = await self._store(create=True, exclusive=True)
            except StoreError as exc:
                if exc.permanent or stop is None:
                    log.error("store.unusable", error=str(exc))
                    return None
                if str(exc) != failing:
                    log.error("store.unavailable", error=str(exc), retry_in=wait)
                failing = str(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                if stop.is_set():
                    return None
                wait = min(2 * wait, STORE_RETRY[1])
                continue
            if failing is not None:
                log.info("store.recovered")
            return store

    async def _store(self, *, create: bool, exclusive: bool) -> Store:
        store = await Store.open(self.settings.watcher.state_path, create=create, exclusive=exclusive)
        self._stack.push_async_callback(store.close)
        return store

    def transports(self, hosts: Iterable[HostConfig]) -> dict[str, Transport]:
        """One transport per host, by name. Opening one connects nowhere yet (that is the first command's
        work); closing them all is never a failure of the command (as a host that is gone cannot be)."""
        transports: dict[str, Transport] = {}
        # Registered before the first is opened: a host whose transport cannot be made leaves none open.
        self._stack.push_async_callback(_close_all, transports)
        for host in hosts:
            transports[host.name] = open_transport(host, self.settings.watcher)
        return transports

    def clickhouse(self, transports: Mapping[str, Transport]) -> ClickHouseHandles:
        """The ClickHouse handles, whose tunnels (``via_host``) go through ``transports``."""
        handles = ClickHouseHandles(self.settings, transports)
        self._stack.push_async_callback(handles.close)
        return handles

    def on_close(self, close: Callable[[], Awaitable[object]]) -> None:
        """Call ``close`` when the block ends, before closing anything opened so far: for what a command
        built on these resources (the daemon: its outbox, its hosts' cleans)."""
        self._stack.push_async_callback(close)


async def _close_all(transports: Mapping[str, Transport]) -> None:
    await asyncio.gather(*(t.close() for t in transports.values()), return_exceptions=True)
