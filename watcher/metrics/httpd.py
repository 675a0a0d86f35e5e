"""The HTTP server under ``/metrics``: a client can cost it one socket for a while, never a thread for ever.

Prometheus sends its request at once and reads the answer at once. A broken or hostile client may instead
open connections and send nothing, send its request a byte at a time (slowloris), or never read the answer.
``socketserver.ThreadingMixIn`` started a thread per connection and let it wait without a bound, so each such
connection cost a thread for as long as the client liked. Here:

- the server's own thread accepts connections and reads their request heads without blocking. A connection
  whose head is not complete ``timeout`` seconds after it connected is closed. At most ``max_pending`` of
  them wait (each holding at most ``MAX_HEAD`` bytes); beyond that the oldest is closed;
- a complete request is answered by a thread of its own, at most ``max_workers`` at a time. Beyond that, the
  server's thread answers ``503`` at once and starts no thread;
- a worker writes under the socket timeout ``timeout``, so a client that does not read costs it that long.

The server's thread never waits for the event loop, nor the event loop for it.
"""

from __future__ import annotations

import io
import selectors
import socket
import socketserver
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

#: Longest request head (request line and headers) read; wsgiref's own limit on the request line.
MAX_HEAD = 65536
#: How often the server's thread looks for heads past their deadline, and for a stop.
_TICK = 0.1


def _status_only(status: str) -> bytes:
    body = f"{status}\n".encode()
    return (
        f"HTTP/1.0 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


_BUSY = _status_only("503 Service Unavailable")
_TOO_LARGE = _status_only("431 Request Header Fields Too Large")


@dataclass(slots=True)
class _Pending:
    """A connection whose request head is still being read."""

    address: tuple[str, int]
    deadline: float
    head: bytearray = field(default_factory=bytearray)


class _SocketWriter(io.BufferedIOBase):
    """``wfile``: every write is a whole ``sendall`` (wsgiref wants no partial writes)."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]  # the buffer protocol's bytes suffice here
        self._conn.sendall(data)
        return len(data)


class _Handler(WSGIRequestHandler):
    """Answers one request whose head the server's thread has already read: ``request`` is (head, socket)."""

    def setup(self) -> None:
        head, self.connection = self.request
        self.rfile = io.BytesIO(head)  # a GET has no body; anything after the head is not read
        self.wfile = _SocketWriter(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        """No access log: Prometheus scrapes every few seconds."""


class BoundedWSGIServer(WSGIServer):
    """A WSGI server with the bounds of the module docstring. Run :meth:`serve` in a thread, :meth:`stop` it
    from another, then :meth:`server_close`."""

    request_queue_size = 64  # the listen() backlog: a burst of connections is accepted, then judged

    def __init__(
        self,
        address: tuple[str, int],
        *,
        timeout: float,
        max_workers: int,
        max_pending: int,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.request_timeout = timeout
        self.max_pending = max_pending
        self._pending: dict[socket.socket, _Pending] = {}  # in the order of their deadlines
        self._workers = threading.BoundedSemaphore(max_workers)
        self._answering: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        super().__init__(address, _Handler)
        self.socket.setblocking(False)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks the resolver for the address's FQDN, which can take seconds on a
        # machine without DNS; the name only serves CGI variables that nobody reads here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def serve(self) -> None:
        """Accept, read request heads and hand complete ones to workers, until :meth:`stop`."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            try:
                while not self._stopping.is_set():
                    for key, _ in selector.select(_TICK):
                        if key.fileobj is self.socket:
                            self._accept(selector)
                        elif isinstance(key.fileobj, socket.socket):
                            self._read(selector, key.fileobj)
                    self._expire(selector)
            finally:
                for conn in list(self._pending):
                    self._drop(selector, conn)

    def stop(self) -> None:
        """Make :meth:`serve` return within ``_TICK``, and cut the connections being answered."""
        self._stopping.set()
        with self._lock:
            for conn in self._answering:
                with suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def _accept(self, selector: selectors.BaseSelector) -> None:
        for _ in range(self.max_pending):  # a burst at a time, so that reading heads is not starved
            try:
                conn, address = self.socket.accept()
            except OSError:  # nothing left to accept (or a connection reset before it was accepted)
                return
            conn.setblocking(False)
            if len(self._pending) >= self.max_pending:
                self._drop(selector, next(iter(self._pending)))
            self._pending[conn] = _Pending(address[:2], time.monotonic() + self.request_timeout)
            selector.register(conn, selectors.EVENT_READ)

    def _read(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        pending = self._pending.get(conn)
        if pending is None:  # dropped earlier in this round, to make room for a new connection
            return
        try:
            chunk = conn.recv(MAX_HEAD + 1 - len(pending.head))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:  # the client gave up
            self._drop(selector, conn)
            return
        start = max(0, len(pending.head) - 2)
        pending.head += chunk
        ended = pending.head.find(b"\n\n", start) >= 0 or pending.head.find(b"\n\r\n", start) >= 0
        if not ended and len(pending.head) <= MAX_HEAD:
            return
        selector.unregister(conn)
        del self._pending[conn]
        if not ended:
            _answer_and_close(conn, _TOO_LARGE)
        elif not self._workers.acquire(blocking=False):
            _answer_and_close(conn, _BUSY)
        else:
            conn.settimeout(self.request_timeout)
            with self._lock:
                self._answering.add(conn)
            worker = threading.Thread(
                target=self._answer, args=(conn, pending), name="metrics-request", daemon=True
            )
            worker.start()

    def _answer(self, conn: socket.socket, pending: _Pending) -> None:
        try:
            _Handler((bytes(pending.head), conn), pending.address, self)
        except OSError:
            pass  # the client went away, or stopped reading for `timeout`: nobody to tell
        finally:
            with self._lock:
                self._answering.discard(conn)
            _close(conn)
            self._workers.release()

    def _expire(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        while self._pending:
            conn, pending = next(iter(self._pending.items()))
            if pending.deadline > now:
                return
            self._drop(selector, conn)

    def _drop(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        selector.unregister(conn)
        del self._pending[conn]
        _close(conn)


def _answer_and_close(conn: socket.socket, response: bytes) -> None:
    """Send a short answer without blocking (it fits an empty socket buffer), then close."""
    with suppress(OSError):
        conn.setblocking(False)
        conn.send(response)
    _close(conn)


def _close(conn: socket.socket) -> None:
    with suppress(OSError):
        conn.shutdown(socket.SHUT_WR)
    conn.close()
