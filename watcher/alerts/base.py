"""The interface of alert sinks, the error they raise, and event severities.

A sink delivers a batch of events (the events of one cycle) all or nothing: either ``deliver`` returns and
every event reached the target, or it raises :class:`DeliveryError` and the outbox delivers the whole batch
again later. Receivers therefore see an event more than once now and then; each event's ``id`` is its
idempotency key.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Protocol

from watcher.records import Event

if TYPE_CHECKING:
    from watcher.alerts.config import AlertConfig

SEVERITIES = ("info", "warning", "critical")


class Sink(Protocol):
    name: str
    kind: str  # "slack" | "webhook" | "alertmanager" | "console"

    async def deliver(self, events: Sequence[Event]) -> None:
        """Deliver every event or raise :class:`DeliveryError`."""
        ...

    async def close(self) -> None: ...


def severity(event: Event) -> str:
    """The event's severity: one of :data:`SEVERITIES`, ``info`` when it has none or an unknown one."""
    value = event.data.get("severity", "info")
    return value if value in SEVERITIES else "info"


def wants(config: AlertConfig, event: Event) -> bool:
    """Whether a sink configured so receives the event: its name matches a glob, its severity is enough."""
    if SEVERITIES.index(severity(event)) < SEVERITIES.index(config.min_severity):
        return False
    return any(fnmatchcase(event.event, pattern) for pattern in config.events)
