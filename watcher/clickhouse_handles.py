"""The ClickHouse handles of a command (``run``, ``once``, ``check``, ``health``): one client per
``[[clickhouse]]`` entry. ``watcher/runtime.py`` builds and closes them; the checks use them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from checks.base import ClickHouse
from watcher.config import ClickHouseConfig, Settings
from watcher.transport import Transport


class ClickHouseHandles:
    """One client per ``[[clickhouse]]`` entry, opened on first use; through an SSH tunnel over the watched
    host's connection when ``via_host`` is set (ClickHouse often listens on the workstation's loopback)."""

    def __init__(self, settings: Settings, transports: Mapping[str, Transport]) -> None:
        self._configs = {c.name: c for c in settings.clickhouse}
        self._transports = transports
        self._timeout = settings.watcher.connect_timeout
        self._clients: dict[str, ClickHouse] = {}
        self._lock = asyncio.Lock()
        if self._configs:
            # Imported now, before the daemon's loop runs: clickhouse_driver takes over 100 ms to import,
            # which at the first check would hold every host's poll (metrics/loop_lag.py).
            import checks.clickhouse.client  # noqa: F401

    async def get(self, name: str) -> ClickHouse:
        async with self._lock:
            client = self._clients.get(name)
            if client is None:
                client = self._clients[name] = await self._open(self._configs[name])
            return client

    async def _open(self, config: ClickHouseConfig) -> ClickHouse:
        from checks.clickhouse.client import ClickHouseClient  # the only importer of clickhouse_driver

        endpoint: Callable[[], Awaitable[tuple[str, int]]] | None = None
        if config.via_host is not None:
            # Looked up before each query: the transport forwards again through its current connection (a
            # port cached across an SSH reconnect would point at nothing, or at whoever binds it next).
            transport, target = self._transports[config.via_host], (config.host, config.port)

            async def endpoint() -> tuple[str, int]:
                return await transport.forward(*target, timeout=self._timeout)

        return ClickHouseClient(
            host=config.host,
            port=config.port,
            endpoint=endpoint,
            user=config.user,
            password=config.password.get_secret_value(),
            database=config.database,
            max_execution_time=config.max_execution_time,
            max_threads=config.max_threads,
            connect_timeout=config.connect_timeout,
        )

    async def close(self) -> None:
        for client in self._clients.values():
            close = getattr(client, "close", None)
            if close is not None:
                await close()
        self._clients.clear()
