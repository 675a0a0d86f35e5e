"""The client <-> daemon connection.

Like pueue: the client connects to the Unix socket, sends the shared secret (the file
`<pueue_directory>/shared_secret` that the daemon creates on its first start), and the daemon
answers with its version, or closes the connection when the secret is wrong. Then the client sends
requests and reads responses on the same connection (`pueue wait` polls over one connection).

The frames are the simulator's own: one JSON object per line (real pueue sends length-prefixed
CBOR). Timestamps travel as integer nanoseconds; the client formats them in its own time zone.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from .config import ConfigError, Settings, io_error_text, rust_debug_path

CLIENT_LOCATION = {"v3": "pueue/src/bin/pueue.rs:94", "v4": "pueue_lib/src/network/client.rs:85"}
# 4.x reads the secret in `main` before it builds the client (pueue/src/bin/pueue.rs:91 in 4.0.4), so a
# daemon that never ran fails there, on the missing file; 3.x connects first and reads it afterwards.
SECRET_LOCATION_V4 = "pueue/src/bin/pueue.rs:91"


def _read_secret(settings: Settings, flavor: str) -> str:
    secret_path = settings.shared_secret_path()
    try:
        return secret_path.read_text()
    except OSError as err:
        message = (
            f"I/O error at path {rust_debug_path(secret_path)} while opening secret file. "
            f"Did you start the daemon at least once?:\n{io_error_text(err)}"
        )
        if flavor == "v4":
            raise ConfigError([message], SECRET_LOCATION_V4) from err
        raise ConfigError(["Failed to initialize client.", message], CLIENT_LOCATION[flavor]) from err


class Connection:
    """One JSON-lines connection over a Unix stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    @staticmethod
    def encode(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    def send(self, obj: Any) -> None:
        self.sock.sendall(self.encode(obj))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> Any:
        line = self.reader.readline()
        if not line:
            return None
        return json.loads(line)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def connect(settings: Settings, flavor: str) -> tuple[Connection, str]:
    """Connect, authenticate, return the connection and the daemon's version.

    Raises ConfigError with pueue's error chain when the daemon is not reachable.
    """
    location = CLIENT_LOCATION[flavor]
    secret = _read_secret(settings, flavor) if flavor == "v4" else None
    path = settings.socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as err:
        sock.close()
        raise ConfigError(
            [
                "Failed to initialize client.",
                "Failed to initialize stream.",
                f"I/O error at path {rust_debug_path(path)} while connecting to daemon. Did you start it?:\n"
                + io_error_text(err),
            ],
            location,
        ) from err
    if secret is None:
        try:
            secret = _read_secret(settings, flavor)
        except ConfigError:
            sock.close()
            raise
    conn = Connection(sock)
    try:
        conn.send({"secret": secret})
        answer = conn.receive()
    except OSError:
        answer = None
    if not answer or "version" not in answer:
        conn.close()
        raise ConfigError(
            [
                "Failed to initialize client.",
                "Daemon went away after sending secret. Did you use the correct secret?",
            ],
            location,
        )
    return conn, str(answer["version"])
