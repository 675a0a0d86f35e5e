"""What a state database must be before the store writes to it, and the migrations that bring it up to date.

``PRAGMA application_id`` marks the file as ours and ``PRAGMA user_version`` holds its schema version. A file
is inspected through a read-only connection first, so that a foreign, newer or corrupt one is reported
without a single byte of it being changed.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import suppress
from urllib.parse import quote

from watcher.errors import StoreError
from watcher.store.connection import corrupt, transaction, translate

APPLICATION_ID = 0x70776174  # "pwat"

# MIGRATIONS[n] brings a database from version n to n + 1, in one transaction. Append a script for each
# change and never edit one that has shipped: every database in the field has run it exactly once.
# Timestamps are UTC ISO 8601 text with microseconds, so that they sort as text.
MIGRATIONS: list[str] = [
    # 1: phases, tracker state, snapshot digests, the event outbox and the record of cleans.
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    -- One row per host that has committed: the digest of its last snapshot.
    CREATE TABLE hosts (
        host TEXT PRIMARY KEY,
        digest TEXT,
        committed_at TEXT NOT NULL
    );
    -- The phase tracker's opaque state, per group.
    CREATE TABLE tracks (
        host TEXT NOT NULL,
        group_name TEXT NOT NULL,
        state BLOB NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (host, group_name)
    );
    -- body: the PhaseRecord as msgspec JSON; the other columns are copies to filter and sort on.
    CREATE TABLE phases (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        group_name TEXT NOT NULL,
        status TEXT NOT NULL,
        opened_at TEXT NOT NULL,
        completed_at TEXT,
        body TEXT NOT NULL
    );
    CREATE INDEX phases_by_group ON phases (host, group_name, status);
    CREATE INDEX phases_by_recency ON phases (coalesce(completed_at, opened_at));
    -- The outbox. seq is the order of creation (a rowid alias, which VACUUM keeps); id is the event's
    -- idempotency key.
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        event TEXT NOT NULL,
        host TEXT NOT NULL,
        group_name TEXT,
        at TEXT NOT NULL,
        created_at TEXT NOT NULL,
        delivered_at TEXT,
        body TEXT NOT NULL
    );
    CREATE INDEX events_undelivered ON events (seq) WHERE delivered_at IS NULL;
    CREATE TABLE cleans (
        seq INTEGER PRIMARY KEY,
        host TEXT NOT NULL,
        at TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX cleans_by_host ON cleans (host, at);
    """,
    # 2: the checks of each completed phase, and what the gates did. A check run is written as "pending" in
    # the same transaction as its phase's completion, so that a restart re-runs what had not finished and
    # never runs twice what had.
    """
    CREATE TABLE check_runs (
        phase_id TEXT NOT NULL,
        check_name TEXT NOT NULL,
        host TEXT NOT NULL,
        group_name TEXT NOT NULL,
        status TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (phase_id, check_name)
    );
    CREATE INDEX check_runs_pending ON check_runs (host) WHERE status = 'pending';
    CREATE TABLE gate_actions (
        phase_id TEXT NOT NULL,
        start_group TEXT NOT NULL,
        host TEXT NOT NULL,
        status TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (phase_id, start_group)
    );
    CREATE INDEX gate_actions_pending ON gate_actions (host) WHERE status = 'pending';
    """,
    # 3: delivery per sink. The outbox dispatches each committed event to the sinks whose filters accept it
    # (a row per sink, in one transaction with marking the event dispatched); every sink then works through
    # its own rows, so that one sink that is down holds up no other.
    """
    CREATE TABLE deliveries (
        event_seq INTEGER NOT NULL REFERENCES events (seq),
        sink TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (event_seq, sink)
    );
    CREATE INDEX deliveries_pending ON deliveries (sink, event_seq) WHERE status = 'pending';
    """,
]


def inspect(path: str) -> None:
    """Raise StoreError unless ``path`` is empty, or a sound database of ours that is not newer than this
    code: permanent for a foreign, newer or corrupt file, temporary if it is locked. Opens it read-only."""
    # Reading a WAL-mode file creates its -wal and -shm files (empty, never our data): a file we refuse should
    # be left as we found it, so remove those again.
    created = [companion for companion in (f"{path}-wal", f"{path}-shm") if not os.path.lexists(companion)]
    try:
        _inspect_read_only(path)
    except StoreError:
        for companion in created:
            with suppress(OSError):
                os.remove(companion)
        raise


def _inspect_read_only(path: str) -> None:
    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, isolation_level=None)
        try:
            _inspect(conn, path)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise translate(exc, path, "reading the state database") from exc


def _inspect(conn: sqlite3.Connection, path: str) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id == 0:
        # A fresh file (0 bytes, or a run that died before the first migration committed) has no tables.
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            return
        raise StoreError(
            f"{path}: a SQLite database of another application (it has tables but no pueue-watcher "
            "application_id); refusing to touch it",
            permanent=True,
        )
    if app_id != APPLICATION_ID:
        raise StoreError(
            f"{path}: a SQLite database of another application (application_id 0x{app_id & 0xFFFFFFFF:08x});"
            " refusing to touch it",
            permanent=True,
        )
    if version > len(MIGRATIONS):
        raise StoreError(
            f"{path}: written by a newer pueue-watcher (schema version {version}, this one knows up to "
            f"{len(MIGRATIONS)}); refusing to touch it",
            permanent=True,
        )
    problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise corrupt(path, f"quick_check: {problems[0]}{more}")


def migrate(conn: sqlite3.Connection) -> None:
    """Run every migration the database has not seen, each in its own transaction."""
    for version in range(user_version(conn), len(MIGRATIONS)):
        with transaction(conn):
            if user_version(conn) != version:  # another process migrated while we waited for the lock
                continue
            if version == 0:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            for statement in statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")


def user_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def statements(script: str) -> Iterator[str]:
    """Split a script into statements: the sqlite3 module executes one at a time, and ``executescript``
    would commit the transaction that a migration must run in."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        yield pending.strip()  # an unfinished statement: let SQLite say what is wrong with it
