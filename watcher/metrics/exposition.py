"""One rendering of the metrics at a time, shared by the scrapes that ask within :data:`FRESH` seconds.

Rendering is pure Python (about 10 µs a sample) and runs in the HTTP worker threads, which share the GIL with
the event loop. Two or three scrapes rendering a host with many groups at once kept the loop waiting for the
GIL for over 80 ms (the hostile-fleet case of 1,000 groups, found with ``PUEUE_WATCHER_STALL_TRACE``). So a
scrape renders under a lock, and a scrape that arrives while a rendering of the same format is under way, or
within :data:`FRESH` of one, is answered with it: the CPU a scrape costs no longer grows with the number of
scrapers. A figure is then at most :data:`FRESH` old, far below any scrape interval.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

#: Seconds for which a rendering answers further scrapes.
FRESH = 1.0


class Exposition:
    """The registry's text for each (format, gzip) asked, rendered at most once per :data:`FRESH`."""

    def __init__(self, registry: CollectorRegistry, fresh: float = FRESH,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._registry = registry
        self._fresh = fresh
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, bool], tuple[float, bytes]] = {}
        self.renderings = 0  # how many times the registry was rendered (for tests and the benchmark)

    def render(self, accept: str, accept_encoding: str) -> tuple[list[tuple[str, str]], bytes]:
        """The headers and body of an answer to a scrape with these ``Accept`` and ``Accept-Encoding``."""
        encoder, content_type = choose_encoder(accept)
        zipped = gzip_accepted(accept_encoding)
        key = (content_type, zipped)
        with self._lock:
            cached = self._cache.get(key)
            if cached is None or self._clock() - cached[0] >= self._fresh:
                body = encoder(self._registry)
                if zipped:
                    body = gzip.compress(body, compresslevel=1)
                cached = (self._clock(), body)
                self._cache[key] = cached
                self.renderings += 1
        headers = [("Content-Type", content_type)]
        if zipped:
            headers.append(("Content-Encoding", "gzip"))
        return headers, cached[1]
