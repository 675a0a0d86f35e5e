"""Alert sinks: where events go. One module per kind; :func:`build_sink` picks it by ``kind``.

::

    base.py          Sink (the Protocol), severities, which events a sink wants (its DeliveryError: errors.py)
    config.py        the [[alerts]] models, one per kind (AlertConfig: the union, chosen by ``kind``)
    _http.py         one POST, its answer classified, URLs and secrets kept out of messages
    console.py       a structlog line per event
    webhook.py       JSON POST, HMAC-signed
    slack.py         an incoming-webhook message (Block Kit)
    alertmanager.py  alerts for Alertmanager's /api/v2/alerts
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from watcher.alerts.base import SEVERITIES, Sink, severity, wants
from watcher.errors import DeliveryError

if TYPE_CHECKING:
    import httpx

    from watcher.alerts.alertmanager import AlertmanagerSink
    from watcher.alerts.config import AlertConfig
    from watcher.alerts.console import ConsoleSink
    from watcher.alerts.slack import SlackSink
    from watcher.alerts.webhook import WebhookSink

    def _conforms(a: ConsoleSink, b: WebhookSink, c: SlackSink, d: AlertmanagerSink) -> list[Sink]:
        """Never called: mypy checks here that every sink implements the Sink protocol."""
        return [a, b, c, d]


__all__ = ["SEVERITIES", "SINKS", "DeliveryError", "Sink", "build_sink", "severity", "wants"]

# kind → "module:class"; a sink's module (and httpx) is imported only when a sink of that kind is configured.
SINKS = {
    "console": "watcher.alerts.console:ConsoleSink",
    "webhook": "watcher.alerts.webhook:WebhookSink",
    "slack": "watcher.alerts.slack:SlackSink",
    "alertmanager": "watcher.alerts.alertmanager:AlertmanagerSink",
}


def build_sink(config: AlertConfig, client: httpx.AsyncClient | None = None) -> Sink:
    """The sink for one ``[[alerts]]`` entry. Pass a shared ``client`` to reuse connections; the caller
    closes it. Without one, the sink makes its own and closes it in ``close()``."""
    module, _, name = SINKS[config.kind].partition(":")
    cls: Any = getattr(importlib.import_module(module), name)
    sink: Sink = cls(config, client)
    return sink
