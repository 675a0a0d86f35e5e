"""The Alertmanager sink: events become alerts, POSTed to ``{url}/api/v2/alerts``.

Alertmanager knows an alert by its labels, so a resolving event re-sends the firing alert's labels exactly,
with ``endsAt`` set to its own time:

=====================  =====================  ===================================================
event                  alert                  labels beside ``alertname``, ``host``, ``severity``
=====================  =====================  ===================================================
check.failed           PueueCheckFailing      ``group``, ``check``; the status (fail, warn, error)
check.warned           PueueCheckFailing      is an annotation, and no phase is a label, so that
check.errored          PueueCheckFailing      one check of one group is one alert across phases
check.recovered        resolves ↑
host.down              PueueHostDown          —
host.up                resolves ↑
probe.breach           PueueHostProbeBreach   ``probe``
probe.recovered        resolves ↑
gate.held              PueueGateHeld          ``group`` (the group held back)
gate.started           resolves ↑
phase.completed        PueuePhaseFailed       ``group``, ``phase``; only when the outcome is failed
phase.flood            PueuePhaseFlood        —; phase alerts of a host over its hourly budget, folded
=====================  =====================  ===================================================

Annotations: ``summary`` (the event's, or "host/group: event"), ``description`` (the event's other data as
``key: value`` lines, bounded), ``event``, ``event_id`` and, for checks, ``status``. ``generatorURL`` is the
configured ``generator_url``, if any.

Group names, task labels, summaries and errors come from the hosts, and Alertmanager's templates (Slack,
e-mail, Teams) escape nothing, so every value goes through :mod:`watcher.sanitize`: each label value is a
:func:`~watcher.sanitize.label` (at most 128 characters; a clean one unchanged, one that had to be cut or
cleaned ends in ``~`` and a hash of the original, so that the same group always gives the same label and two
groups stay two alerts), each annotation is :func:`~watcher.sanitize.inert` (bounded, one line per value, no
control, bidi or zero-width character, no mention, no link). The label names are ours, never a host's.

Other events (a successful phase, ``state.cleaned``) are not sent; a batch of only those makes no request.

``severity`` is a label, so that Alertmanager routes can use it; but labels are an alert's identity, so a
check that goes from warning to critical becomes a second alert. Before it posts, the sink therefore asks
Alertmanager which Pueue alerts are active (``GET /api/v2/alerts``, one request per batch that holds a
firing or resolving event): a firing event also resolves its alert's active siblings at another severity,
and a resolving event (whose own severity is ``info``) resolves every active sibling. Resolving blindly at
all three severities would also work, but Alertmanager lists every resolved alert of an aggregation group in
the next notification, including those that never fired ("RESOLVED: PueueCheckFailing warning" beside
each new critical one). After an Alertmanager restart there is nothing to resolve, and nothing is sent.

How long an alert fires: Alertmanager resolves an alert by itself at its ``endsAt`` (or, without one,
``resolve_timeout`` after it last received it, 5 minutes by default). The watcher sends each event once,
not again every few seconds as Prometheus does, so a firing alert gets an explicit ``endsAt``:
``resolve_timeout`` from now when configured, else 30 days, a backstop for a resolving event that will never
come (a host removed from the configuration). ``PueuePhaseFailed`` has no resolving event: it is a one-shot
alert that ends an hour after it is sent, long enough for every group_wait and the notification. Its
``phase`` label keeps two failed phases of one group apart.

Alertmanager keeps alerts in memory: after its restart, alerts fire again only when their events are sent
again. Several watchers sending the same alert produce one notification: that is the high-availability
setup. Replicas of a clustered Alertmanager share silences and what they notified, not alerts: like
Prometheus, configure one sink per replica.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
from pydantic import SecretStr

from watcher.alerts._http import HttpTarget
from watcher.alerts.base import severity
from watcher.alerts.config import AlertmanagerConfig
from watcher.errors import DeliveryError
from watcher.records import Event
from watcher.sanitize import inert, label

FIRING = {
    "check.failed": "PueueCheckFailing",
    "check.warned": "PueueCheckFailing",
    "check.errored": "PueueCheckFailing",
    "host.down": "PueueHostDown",
    "probe.breach": "PueueHostProbeBreach",
    "gate.held": "PueueGateHeld",
}
RESOLVING = {
    "check.recovered": "PueueCheckFailing",
    "host.up": "PueueHostDown",
    "probe.recovered": "PueueHostProbeBreach",
    "gate.started": "PueueGateHeld",
}
PHASE_FAILED = "PueuePhaseFailed"
PHASE_FLOOD = "PueuePhaseFlood"
UNTIL_RESOLVED = timedelta(days=30)
ONE_SHOT = timedelta(hours=1)

_DESCRIPTION_MAX = 2000
_VALUE_MAX = 300
_SUMMARY_MAX = 500
_STATUS_MAX = 64
_EVENT_ID_MAX = 256
_NOT_DESCRIBED = {"summary", "severity"}


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _time(at: datetime) -> str:
    return _aware(at).isoformat()


def _labels(alertname: str, event: Event, level: str) -> dict[str, str]:
    """The alert's identity. Names and ``alertname``/``severity`` are ours; every other value passes
    through :func:`label`, also those from the configuration (a no-op for a clean name)."""
    labels = {"alertname": alertname, "host": label(event.host)}
    if event.group:
        labels["group"] = label(event.group)
    if alertname == "PueueCheckFailing" and event.data.get("check"):
        labels["check"] = label(str(event.data["check"]))
    if alertname == "PueueHostProbeBreach" and event.data.get("probe"):
        labels["probe"] = label(str(event.data["probe"]))
    if alertname == PHASE_FAILED and event.data.get("phase"):
        labels["phase"] = label(str(event.data["phase"]))
    labels["severity"] = level
    return labels


def _description(event: Event) -> str:
    """The event's data as ``key: value`` lines, each value and the whole bounded."""
    lines = []
    for key, value in event.data.items():
        if key in _NOT_DESCRIBED or value is None or value in ([], {}):
            continue
        text = value if isinstance(value, str) else json.dumps(msgspec.to_builtins(value), ensure_ascii=False)
        lines.append(f"{inert(key, 64)}: {inert(text, _VALUE_MAX)}")
    text = "\n".join(lines)
    return text if len(text) <= _DESCRIPTION_MAX else text[: _DESCRIPTION_MAX - 1] + "…"


def _annotations(event: Event) -> dict[str, str]:
    where = event.host + (f"/{event.group}" if event.group else "")
    annotations = {
        "summary": inert(str(event.data.get("summary") or f"{where}: {event.event}"), _SUMMARY_MAX),
        "description": _description(event),
        "event": inert(event.event, 64),
        # An id, not prose: bounded like a label, so that two long ids stay apart.
        "event_id": label(event.id, _EVENT_ID_MAX),
    }
    if event.data.get("status"):
        annotations["status"] = inert(str(event.data["status"]), _STATUS_MAX)
    return {k: v for k, v in annotations.items() if v}


def _identity(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k != "severity"}


def alerts(
    events: Sequence[Event],
    *,
    now: datetime,
    active: Sequence[dict[str, str]] = (),
    resolve_timeout: float = 0,
    generator_url: str | None = None,
) -> list[dict[str, Any]]:
    """The ``/api/v2/alerts`` body for a batch (see the table above). ``active``: the label sets of the
    alerts Alertmanager has active; ``now`` bounds the firing alerts."""
    lifetime = timedelta(seconds=resolve_timeout) if resolve_timeout > 0 else UNTIL_RESOLVED
    firing = [dict(labels) for labels in active]  # kept up to date through the batch
    out: list[dict[str, Any]] = []

    def add(labels: dict[str, str], event: Event, starts: datetime, ends: datetime) -> None:
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": _annotations(event),
            "startsAt": _time(starts),
            "endsAt": _time(ends),
        }
        if generator_url:
            alert["generatorURL"] = generator_url
        out.append(alert)

    def resolve(labels: dict[str, str], event: Event, at: datetime, keep: str | None = None) -> None:
        for other in [f for f in firing if _identity(f) == _identity(labels) and f.get("severity") != keep]:
            # startsAt = endsAt: Alertmanager refuses an end before the start, and merges the resolve with
            # the firing alert, keeping the firing alert's (earlier) startsAt.
            add(other, event, at, at)
            firing.remove(other)

    for event in events:
        level, at = severity(event), _aware(event.at)
        if event.event in FIRING:
            labels = _labels(FIRING[event.event], event, level)
            resolve(labels, event, at, keep=level)
            add(labels, event, at, max(now, at) + lifetime)
            if labels not in firing:
                firing.append(labels)
        elif event.event in RESOLVING:
            resolve(_labels(RESOLVING[event.event], event, level), event, at)
        elif event.event == "phase.completed" and event.data.get("outcome") == "failed":
            add(_labels(PHASE_FAILED, event, level), event, at, max(now, at) + ONE_SHOT)
        elif event.event == "phase.flood":
            add(_labels(PHASE_FLOOD, event, level), event, at, max(now, at) + ONE_SHOT)
    return out


class AlertmanagerSink:
    kind = "alertmanager"

    def __init__(
        self,
        config: AlertmanagerConfig,
        client: httpx.AsyncClient | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.name = config.name
        self._config = config
        self._clock = clock
        self._target = HttpTarget(
            f"alertmanager {config.name!r}", SecretStr(f"{config.url}/api/v2/alerts"), config.timeout, client
        )

    async def deliver(self, events: Sequence[Event]) -> None:
        stateful = any(e.event in FIRING or e.event in RESOLVING for e in events)
        body = alerts(
            events,
            now=self._clock(),
            active=await self._active() if stateful else (),
            resolve_timeout=self._config.resolve_timeout,
            generator_url=self._config.generator_url,
        )
        if body:
            await self._target.post(msgspec.json.encode(body), {"Content-Type": "application/json"})

    async def _active(self) -> list[dict[str, str]]:
        """The label sets of the active (also silenced, inhibited, not yet processed) Pueue alerts."""
        matcher = "alertname=~" + json.dumps("|".join(sorted(set(FIRING.values()))))
        response = await self._target.get({"active": "true", "filter": matcher})
        try:
            found = response.json()
            return [
                {str(k): str(v) for k, v in alert["labels"].items()} for alert in found if alert.get("labels")
            ]
        except (ValueError, TypeError, KeyError, AttributeError):
            raise DeliveryError(f"{self._target.describe}: unreadable answer to GET /api/v2/alerts") from None

    async def close(self) -> None:
        await self._target.close()
