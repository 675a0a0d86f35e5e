"""What tests read of the state database behind the Store's back, straight from its file.

The Store offers only what the watcher uses; what only a test wants to see (every event, a host's digest,
whether any host has committed, which events a sink got) is read here. In WAL mode these readers see every
commit and never block the store's writer. The connection may write (``mode=rw``, no file is created) only so
that, as the last one to close, it removes the -wal and -shm files that it made: a read-only one leaves them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import msgspec

from watcher.records import Event


@contextlib.contextmanager
def reading(path: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{quote(os.fspath(path))}?mode=rw", uri=True, timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def rows(path: str | os.PathLike[str], sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with reading(path) as conn:
        return conn.execute(sql, params).fetchall()


def events(path: str | os.PathLike[str], limit: int | None = None) -> list[Event]:
    """Every committed event, dispatched or not, oldest first: the first ``limit`` of them."""
    found = rows(path, "SELECT body FROM events ORDER BY seq LIMIT ?", (-1 if limit is None else limit,))
    return [msgspec.json.decode(body, type=Event) for (body,) in found]


def digest(path: str | os.PathLike[str], host: str) -> str | None:
    """The snapshot digest of ``host``'s last committed poll."""
    found = rows(path, "SELECT digest FROM hosts WHERE host = ?", (host,))
    return found[0][0] if found else None


def is_new(path: str | os.PathLike[str]) -> bool:
    """True until the first commit of any host (the meta row ``first_commit_at``)."""
    return not rows(path, "SELECT 1 FROM meta WHERE key = 'first_commit_at'")


def delivered(path: str | os.PathLike[str], sink: str) -> list[str]:
    """The ids of the events ``sink`` has delivered, in commit order."""
    found = rows(
        path,
        "SELECT e.id FROM deliveries d JOIN events e ON e.seq = d.event_seq"
        " WHERE d.sink = ? AND d.status = 'delivered' ORDER BY d.event_seq",
        (sink,),
    )
    return [event_id for (event_id,) in found]
