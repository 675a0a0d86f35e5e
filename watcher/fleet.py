"""The set of watched hosts: one poller (and one persistent transport) per host, polled concurrently."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence

from watcher.config import HostConfig, Settings
from watcher.poll.poller import HostPoller, PollResult
from watcher.transport import Transport, open_transport


class Fleet:
    """Polls hosts at most ``max_concurrency`` at a time; a slow or dead host only holds its own slot. Given
    ``transports`` (a :class:`~watcher.runtime.Runtime`'s, which closes them), it polls through them."""

    def __init__(
        self,
        settings: Settings,
        hosts: Sequence[HostConfig] | None = None,
        transports: Mapping[str, Transport] | None = None,
    ) -> None:
        watcher = settings.watcher
        chosen = settings.hosts if hosts is None else hosts
        self.pollers = {
            host.name: HostPoller.configured(
                host, open_transport(host, watcher) if transports is None else transports[host.name], watcher
            )
            for host in chosen
        }
        self._slots = asyncio.Semaphore(watcher.max_concurrency)

    async def poll(self, names: Sequence[str] | None = None) -> list[PollResult]:
        """Poll the named hosts (all by default); results come back in configuration order."""
        chosen = [self.pollers[name] for name in (names or self.pollers)]
        return list(await asyncio.gather(*(self._poll_one(p) for p in chosen)))

    async def poll_each(self) -> AsyncIterator[PollResult]:
        """Every host's result as soon as it is in (a host that hangs holds up only itself)."""
        for done in asyncio.as_completed([self._poll_one(p) for p in self.pollers.values()]):
            yield await done

    async def close(self) -> None:
        await asyncio.gather(*(poller.close() for poller in self.pollers.values()), return_exceptions=True)

    async def _poll_one(self, poller: HostPoller) -> PollResult:
        async with self._slots:
            return await poller.poll()
