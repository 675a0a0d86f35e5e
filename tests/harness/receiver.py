"""An HTTP server on loopback that records every request and answers from a script, in its own threads.

It stands in for a webhook receiver, Slack, or the target of Alertmanager's webhook_configs::

    with Receiver() as hook:
        hook.script(Reply(500), Reply(200, delay=5), Reply(429, headers={"Retry-After": "1"}))
        ...                              # POST to hook.url + "/anything"
        hook.wait_for(3)                 # the requests, once three have come

Each request takes the next scripted reply; when the script is empty, the answer is ``200 ok``. A reply's
``delay`` holds the answer back (longer than the client's timeout: a hang); stopping the server ends every
delay at once. A request is recorded as soon as it is read, before it is answered.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from tests.harness.services import free_port


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    def __init__(self, *replies: Reply) -> None:
        self.port = free_port()
        self.requests: list[Request] = []
        self._replies: deque[Reply] = deque(replies)
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order (after any still scripted)."""
        with self._changed:
            self._replies.extend(replies)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Request]:
        """The requests so far, once there are at least ``count``; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.requests)} of {count} requests after {timeout}s")
                self._changed.wait(left)
            return list(self.requests)

    def _record(self, request: Request) -> Reply:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()
            return self._replies.popleft() if self._replies else Reply()

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = receiver._record(Request(self.command, self.path, headers, body))
                if reply.delay and receiver._stopping.wait(reply.delay):
                    self.close_connection = True
                    return
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                    self.close_connection = True

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
