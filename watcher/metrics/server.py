"""The HTTP endpoint: ``GET /metrics`` (Prometheus text, or OpenMetrics when asked) and ``GET /healthz``.

It runs in a thread of its own (:mod:`watcher.metrics.httpd`: bounded threads, timeouts), and each request
in a worker thread: a scrape never waits for the event loop, and a slow event loop (a large state file being
parsed) never delays a scrape. Concurrent scrapes share one rendering (:mod:`watcher.metrics.exposition`).
The collector reads only the immutable view :class:`MetricsState` swaps in, so nothing is shared that could
be seen half-written.
"""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry

from watcher.errors import MetricsError
from watcher.metrics.collector import build_registry
from watcher.metrics.exposition import Exposition
from watcher.metrics.httpd import BoundedWSGIServer
from watcher.metrics.state import MetricsState

#: Default of ``stale_after``: /healthz turns 503 when the daemon's loop has not reported for this long.
STALE_AFTER = 600.0
#: Seconds a client has to send its request head, and a worker to write each answer.
REQUEST_TIMEOUT = 10.0
#: Requests answered at the same time; one more gets an immediate 503. Prometheus sends one at a time.
MAX_WORKERS = 8
#: Connections whose request is still being read; one more closes the oldest.
MAX_PENDING = 64


def parse_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:9925"`` for IPv6, ``":9925"`` for every IPv4 address) → (host, port)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise MetricsError(f"metrics.listen {listen!r}: expected host:port, such as 127.0.0.1:9925")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise MetricsError(f"metrics.listen {listen!r}: write an IPv6 address in brackets, as [::1]:9925")
    return host, int(port_text)


def _app(state: MetricsState, registry: CollectorRegistry, stale_after: float) -> WSGIApplication:
    exposition = Exposition(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD", "GET") != "GET":
            start_response("405 Method Not Allowed", [("Allow", "GET")])
            return [b"use GET\n"]
        if path == "/metrics":
            headers, body = exposition.render(
                environ.get("HTTP_ACCEPT", ""), environ.get("HTTP_ACCEPT_ENCODING", "")
            )
            start_response("200 OK", headers)
            return [body]
        if path == "/healthz":
            healthy, document = state.health(stale_after)
            payload = json.dumps(document).encode()
            status = "200 OK" if healthy else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
            return [payload]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"pueue-watcher: /metrics, /healthz\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


class MetricsServer:
    """A running endpoint: ``host`` and ``port`` are where it listens (the actual port for ``:0``)."""

    def __init__(self, httpd: BoundedWSGIServer) -> None:
        self._httpd = httpd
        self.host, self.port = str(httpd.server_address[0]), int(httpd.server_address[1])
        self._thread = threading.Thread(target=httpd.serve, name="metrics-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port; returns within about 0.1 s."""
        self._httpd.stop()
        self._thread.join()
        self._httpd.server_close()


async def start_metrics_server(
    listen: str,
    state: MetricsState,
    *,
    stale_after: float = STALE_AFTER,
    registry: CollectorRegistry | None = None,
    request_timeout: float = REQUEST_TIMEOUT,
    max_workers: int = MAX_WORKERS,
    max_pending: int = MAX_PENDING,
) -> MetricsServer | None:
    """Serve ``state`` on ``listen`` ("host:port"; ``""`` disables the endpoint and returns None).

    ``stale_after``: seconds without :meth:`MetricsState.heartbeat` after which ``/healthz`` answers 503.
    ``registry`` defaults to :func:`build_registry` of ``state``. ``request_timeout``, ``max_workers`` and
    ``max_pending`` bound what a client can hold (:mod:`watcher.metrics.httpd`). Raises :class:`MetricsError`
    with one line when the address is malformed, in use, or cannot be bound.
    """
    if not listen:
        return None
    host, port = parse_listen(listen)
    try:
        httpd = BoundedWSGIServer(
            (host, port), timeout=request_timeout, max_workers=max_workers, max_pending=max_pending
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise MetricsError(f"metrics.listen {listen}: address already in use") from None
        raise MetricsError(f"metrics.listen {listen}: cannot listen: {exc.strerror or exc}") from None
    httpd.set_app(_app(state, registry or build_registry(state), stale_after))
    return MetricsServer(httpd)
