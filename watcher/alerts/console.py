"""The console sink: one structlog line per event, named after the event (``phase.completed``)."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import structlog

from watcher.alerts.config import ConsoleConfig
from watcher.records import Event

log = structlog.get_logger("watcher.events")


class ConsoleSink:
    """Never fails: a log line is written or the process has bigger problems."""

    kind = "console"

    def __init__(self, config: ConsoleConfig, client: httpx.AsyncClient | None = None) -> None:
        self.name = config.name

    async def deliver(self, events: Sequence[Event]) -> None:
        for event in events:
            fields = event.to_dict()
            del fields["event"]  # structlog's own key: the line's name is the event's name
            log.info(event.event, **fields)

    async def close(self) -> None:
        return None
