"""The webhook sink: one JSON POST per batch of events, signed with HMAC-SHA256 when a secret is set.

The request
-----------

``POST <url>`` with ``Content-Type: application/json`` and this body (UTF-8)::

    {
      "schema_version": 1,
      "events": [
        {"id": "phase.completed:…",     # idempotency key: the same on every retry and restart
         "event": "phase.completed",   # or check.failed, host.down, probe.breach, gate.held, …
         "host": "gpu-01",
         "group": "train",             # null for host-wide events
         "at": "2024-05-01T12:00:00+00:00",
         "severity": "warning",        # info | warning | critical
         "summary": "gpu-01/train: phase failed, …",
         …}                            # the rest of the event's data, flat (see watcher/events.py)
      ]
    }

A batch is delivered at least once: a receiver that must not act twice keeps the ``id`` values it has seen.
``schema_version`` changes only when a field changes meaning or disappears; new fields may appear at any time.

Fields hold the host's text as it is, JSON-escaped: a receiver that shows them to people sanitises them
(``watcher/sanitize.py`` does it for our own sinks). Only their length is bounded, since pueue bounds no task
label: a string longer than 4096 characters is cut and ends in ``…``, except the identities a receiver
matches on (``id``, ``host``, ``group``, ``phase``), which are sent whole (a group's name is bounded where it
is read, by ``watcher.max_group_name``).

Headers:

``X-Pueue-Watcher-Event-Ids``
    The batch's event ids, comma-separated, each percent-encoded (RFC 3986) where it holds a comma, a
    space or a non-ASCII character. A receiver can acknowledge or deduplicate without parsing the body.
    Left out when it would be longer than 8000 bytes (ids hold group names, which pueue does not bound,
    and common servers refuse a header line beyond 8 KiB); the body always has the ids.
``X-Pueue-Watcher-Timestamp``
    When the request was signed, in whole seconds since the Unix epoch (only with a secret).
``X-Pueue-Watcher-Signature``
    ``sha256=`` + the lowercase hex HMAC-SHA256, keyed with the secret (its UTF-8 bytes), of
    ``f"{timestamp}.".encode() + body``: the timestamp header, a dot, then the exact body bytes as received
    (only with a secret).

To verify: recompute the HMAC over the raw body (before any JSON parsing), compare with
``hmac.compare_digest``, and refuse a timestamp more than a few minutes away from the receiver's clock, so
that a captured request cannot be replayed later. A retried batch is signed again with a new timestamp.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from watcher.alerts._http import HttpTarget
from watcher.alerts.config import WebhookConfig
from watcher.records import Event

SCHEMA_VERSION = 1
FIELD_MAX = 4096  # characters of one string in an event, but for the identities below
_WHOLE = ("id", "host", "group", "phase")

# Everything an event id is made of in practice stays readable; a comma (the separator), whitespace and
# non-ASCII are percent-encoded, so the header is always one valid ASCII line.
_ID_SAFE = "/:@!$&'()*+;=-._~#[]"
# Apache refuses a header line beyond 8190 bytes (LimitRequestFieldSize), nginx beyond its 8 KiB buffers.
_IDS_HEADER_MAX = 8000


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= FIELD_MAX else value[: FIELD_MAX - 1] + "…"
    if isinstance(value, list):
        return [_bounded(v) for v in value]
    if isinstance(value, dict):
        return {_bounded(k): _bounded(v) for k, v in value.items()}
    return value


def _fields(event: Event) -> dict[str, Any]:
    """The event's flat form, every string bounded but the identities (``id``: the idempotency key)."""
    flat = event.to_dict()
    fields: dict[str, Any] = _bounded(flat)
    fields.update((key, flat[key]) for key in _WHOLE if key in flat)
    return fields


def body(events: Sequence[Event]) -> bytes:
    """The exact bytes POSTed (compact JSON)."""
    return msgspec.json.encode({"schema_version": SCHEMA_VERSION, "events": [_fields(e) for e in events]})


def signature(secret: str, timestamp: int, content: bytes) -> str:
    """``sha256=<hex>`` of ``f"{timestamp}.".encode() + content``, keyed with ``secret``."""
    signed = f"{timestamp}.".encode() + content
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


class WebhookSink:
    kind = "webhook"

    def __init__(
        self,
        config: WebhookConfig,
        client: httpx.AsyncClient | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = config.name
        self._secret = config.secret
        self._clock = clock
        secrets = [config.secret] if config.secret is not None else []
        self._target = HttpTarget(f"webhook {config.name!r}", config.url, config.timeout, client, secrets)

    async def deliver(self, events: Sequence[Event]) -> None:
        if not events:
            return
        content = body(events)
        headers = {"Content-Type": "application/json"}
        ids = ",".join(quote(e.id, safe=_ID_SAFE) for e in events)
        if len(ids) <= _IDS_HEADER_MAX:
            headers["X-Pueue-Watcher-Event-Ids"] = ids
        if self._secret is not None:
            timestamp = int(self._clock())
            headers["X-Pueue-Watcher-Timestamp"] = str(timestamp)
            headers["X-Pueue-Watcher-Signature"] = signature(
                self._secret.get_secret_value(), timestamp, content
            )
        await self._target.post(content, headers)

    async def close(self) -> None:
        await self._target.close()
