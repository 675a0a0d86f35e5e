"""The outbox: events committed to the store are delivered after the commit, and marked delivered.

An event is written in the same transaction as the state change that caused it, and delivered only after
that transaction; undelivered events survive a restart and go out at the next flush. Until alert sinks exist,
delivery is a structured log line (the ``console`` sink).
"""

from __future__ import annotations

import asyncio

import structlog

from watcher.phases.records import Event
from watcher.store import Store

log = structlog.get_logger("watcher.events")


class Outbox:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = asyncio.Lock()

    async def flush(self) -> list[Event]:
        """Deliver every undelivered event, oldest first; return them."""
        async with self._lock:
            events = await self._store.undelivered()
            for event in events:
                fields = event.to_dict()
                del fields["event"]
                log.info(event.event, **fields)
            if events:
                await self._store.mark_delivered([e.id for e in events])
            return events
