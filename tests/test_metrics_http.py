"""The metrics endpoint against clients that do not behave like Prometheus: idle, trickling, too many.

Real sockets on loopback. ``GUARD`` only keeps a broken server from hanging the test: no assertion is made on
how long anything took, only on what the client saw (an answer, its status, or the server closing).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from watcher.metrics import MetricsServer, MetricsState, start_metrics_server
from watcher.metrics.httpd import MAX_HEAD
from watcher.metrics.server import MAX_WORKERS

GUARD = 30.0
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: watcher\r\n\r\n"


@contextlib.contextmanager
def serving(
    registry: CollectorRegistry | None = None, *, request_timeout: float = 10.0, max_pending: int = 64
) -> Iterator[MetricsServer]:
    """An endpoint on a free loopback port, with its own bounds (the workers stay at MAX_WORKERS)."""
    server = asyncio.run(
        start_metrics_server(
            "127.0.0.1:0", MetricsState(), registry=registry, request_timeout=request_timeout,
            max_pending=max_pending,
        )
    )  # fmt: skip
    assert server is not None
    try:
        yield server
    finally:
        server.close()


def _connect(server: MetricsServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=GUARD)


def _read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes ('' when it closes without a word)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _get(server: MetricsServer, request: bytes = REQUEST) -> bytes:
    with _connect(server) as sock:
        sock.sendall(request)
        return _read_to_end(sock)


def _request_threads() -> int:
    return sum(thread.name == "metrics-request" for thread in threading.enumerate())


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + GUARD
    while not condition():
        assert time.monotonic() < deadline, "the condition was not met within the guard"
        time.sleep(0.01)


def _join_finished_requests() -> None:
    """Wait for the workers of answered requests to end (a worker closes the socket, then returns)."""
    for thread in threading.enumerate():
        if thread.name == "metrics-request":
            thread.join(GUARD)


def test_idle_connections_cost_no_thread_and_scrapes_still_answer() -> None:
    """50 connections that send nothing start no thread, and a scrape beside them answers 200."""
    with serving(request_timeout=GUARD) as server, contextlib.ExitStack() as stack:
        idle = [stack.enter_context(_connect(server)) for _ in range(50)]
        for _ in range(3):
            answer = _get(server)
            assert _status(answer) == 200
            assert b"\r\nContent-Type: text/plain; version=0.0.4" in answer
        # The 50 were accepted before the scrapes (one listen queue); none of them holds a thread.
        _join_finished_requests()
        assert _request_threads() == 0
        # The idle connections are still open: the server answered beside them, not instead of them.
        for sock in idle:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)


def test_a_silent_connection_is_closed_after_the_timeout() -> None:
    """A client that connects and sends nothing is closed by the server once the request timeout passes."""
    with serving(request_timeout=0.5) as server, _connect(server) as sock:
        assert _read_to_end(sock) == b""
        assert _status(_get(server)) == 200


def test_a_trickled_request_is_cut_at_its_deadline() -> None:
    """Slowloris: a head sent one byte at a time, never finished, is closed, not answered."""
    with serving(request_timeout=0.5) as server, _connect(server) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        sock.settimeout(0.05)
        closed = False
        for _ in range(int(GUARD / 0.05)):
            try:
                sock.sendall(b"X")
                received = sock.recv(1)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            assert received == b"", f"the server answered a request it never fully got: {received!r}"
            closed = True
            break
        assert closed, "the server kept a trickling client for the whole guard"


def test_requests_beyond_the_workers_get_503_without_a_thread() -> None:
    """With every worker busy, one more request is answered 503 at once and starts no thread; the busy ones
    then finish with 200, and so does the next request. The busy ones shared one rendering: the first
    renders, the others wait for it (:mod:`watcher.metrics.exposition`)."""
    entered, gate = threading.Semaphore(0), threading.Event()

    class Slow(Collector):
        def collect(self) -> Iterable[GaugeMetricFamily]:
            entered.release()
            gate.wait(GUARD)
            yield GaugeMetricFamily("slow", "a collector that waits", value=1)

    registry = CollectorRegistry()
    registry.register(Slow())
    _join_finished_requests()  # of the tests before this one
    with serving(registry) as server:
        answers: list[bytes] = []
        scrapers = [threading.Thread(target=lambda: answers.append(_get(server))) for _ in range(MAX_WORKERS)]
        for scraper in scrapers:
            scraper.start()
        try:
            assert entered.acquire(timeout=GUARD)
            _wait_for(lambda: _request_threads() == MAX_WORKERS)
            refused = _get(server)
            assert _status(refused) == 503
            assert _request_threads() == MAX_WORKERS
        finally:
            gate.set()
            for scraper in scrapers:
                scraper.join(GUARD)
        assert [_status(answer) for answer in answers] == [200] * MAX_WORKERS
        assert all(b"slow 1.0" in answer for answer in answers)
        assert not entered.acquire(timeout=0), "a scrape rendered again instead of sharing the rendering"
        assert _status(_get(server)) == 200


def test_the_oldest_waiting_connection_makes_room() -> None:
    """Beyond ``max_pending`` connections still sending their request, the oldest is closed; a scrape
    always gets in."""
    with serving(request_timeout=GUARD, max_pending=4) as server, contextlib.ExitStack() as stack:
        first, *others = [stack.enter_context(_connect(server)) for _ in range(5)]
        assert _read_to_end(first) == b""
        assert _status(_get(server)) == 200
        for sock in others[1:]:  # others[0] made room for the scrape
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)


def test_an_oversized_request_head_gets_431() -> None:
    """A head longer than MAX_HEAD is refused with 431 and never reaches the application."""
    with serving() as server:
        flood = b"GET /metrics HTTP/1.1\r\nX-Flood: " + b"a" * MAX_HEAD
        assert _status(_get(server, flood)) == 431


def test_close_cuts_waiting_and_answering_connections() -> None:
    """close() returns with a request blocked in the collector and an idle connection, and both are cut."""
    entered, gate = threading.Semaphore(0), threading.Event()

    class Stuck(Collector):
        def collect(self) -> Iterable[GaugeMetricFamily]:
            entered.release()
            gate.wait(GUARD)
            return []

    registry = CollectorRegistry()
    registry.register(Stuck())
    server = asyncio.run(start_metrics_server("127.0.0.1:0", MetricsState(), registry=registry))
    assert server is not None
    try:
        with _connect(server) as idle, _connect(server) as busy:
            busy.sendall(REQUEST)
            assert entered.acquire(timeout=GUARD)
            server.close()
            assert _read_to_end(idle) == b""
            with contextlib.suppress(ConnectionResetError):
                assert b"200 OK" not in _read_to_end(busy)
    finally:
        gate.set()
        server.close()
