"""One SQLite connection with the durability settings, its transactions, and the translation of sqlite3
errors into StoreError."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from watcher.errors import StoreError

# These clear up by themselves (another writer finishes, space is freed, the disk comes back): the write
# fails now and is retried at the next cycle. Everything else (corrupt, not a database, read-only, a
# permission, a bug in our SQL) needs someone to look at it.
_TEMPORARY = frozenset({
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_NOMEM,
    sqlite3.SQLITE_INTERRUPT,
    sqlite3.SQLITE_PROTOCOL,
})  # fmt: skip


def connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    """Open ``path`` for reading and writing: WAL, a full fsync at each commit, explicit transactions."""
    # isolation_level=None: the sqlite3 module opens no transaction behind our back; `transaction()` does.
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(
                f"{path}: cannot switch the database to WAL mode (it stays {mode!r})", permanent=True
            )
        # In WAL mode NORMAL may lose the last commits on power loss; FULL syncs the WAL at every commit, so
        # that a completion reported as stored stays stored.
        conn.execute("PRAGMA synchronous = FULL")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE … COMMIT``; on any error, roll back and re-raise.

    IMMEDIATE takes the write lock at once, so that a busy database fails before any work is done rather than
    at the first write."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # SQLite rolls back by itself after some errors (a full disk, an I/O error); a failing rollback must
        # not hide the error that caused it.
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def translate(exc: sqlite3.Error, path: str, doing: str) -> StoreError:
    """The StoreError for ``exc``: one line that names the file, what failed and why."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF  # extended codes keep the primary one in the low byte
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if code == sqlite3.SQLITE_IOERR_SHMSIZE:  # SQLite's own words are "disk I/O error": say which and why
        reason = "cannot extend its shared-memory file (-shm): disk full?"
    if primary == sqlite3.SQLITE_NOTADB:
        return StoreError(f"{path}: not a SQLite database; refusing to touch it", permanent=True)
    if primary == sqlite3.SQLITE_CORRUPT:
        return corrupt(path, reason)
    return StoreError(f"{path}: {doing} failed: {reason}", permanent=primary not in _TEMPORARY)


def corrupt(path: str, detail: str) -> StoreError:
    detail = " ".join(detail.split())
    return StoreError(
        f"{path}: the state database is corrupt ({detail}); refusing to touch it", permanent=True
    )
