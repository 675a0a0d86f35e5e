"""Prometheus metrics: the daemon feeds :class:`MetricsState`, a collector reads it at scrape time, and a
small HTTP server in its own thread serves ``/metrics`` and ``/healthz``.

``state`` keeps what is exported (immutable views swapped under a lock), ``collector`` turns one view into
metric families, ``server`` serves them.
"""

from __future__ import annotations

from watcher.errors import MetricsError
from watcher.metrics.collector import WatcherCollector, build_registry
from watcher.metrics.server import MetricsServer, start_metrics_server
from watcher.metrics.state import MetricsState

__all__ = [
    "MetricsError",
    "MetricsServer",
    "MetricsState",
    "WatcherCollector",
    "build_registry",
    "start_metrics_server",
]
