"""The state store: an asyncio face on one SQLite connection that lives in a thread of its own.

Every sqlite3 call runs in that one thread (it also creates the connection), so a slow disk or a long fsync
never stalls the event loop, and the connection is never shared between threads. Calls queue behind one
another there, which also serialises the transactions.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Concatenate, ParamSpec, TypeVar

from watcher.errors import StoreError
from watcher.records import CheckRun, CleanRecord, DeliveryStatus, Event, GateAction, PhaseRecord, PhaseStatus
from watcher.store import files, lock, queries, schema
from watcher.store.connection import connect, translate

P = ParamSpec("P")
T = TypeVar("T")


class Store:
    """Phases, tracker state, snapshot digests, the event outbox and the record of cleans, in SQLite.

    Its methods are the ones the watcher calls, and no more: what only a test reads (every event, a digest,
    a sink's deliveries) it reads from the file itself (``tests/harness/state_db.py``)."""

    def __init__(
        self, path: str, executor: ThreadPoolExecutor, conn: sqlite3.Connection, lock_fd: int | None = None
    ) -> None:
        self.path = path
        self._executor = executor
        self._conn = conn  # touched in the store thread only
        self._lock_fd = lock_fd
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        create: bool = True,
        exclusive: bool = False,
    ) -> Store:
        """Open or create the database at ``path`` and bring its schema up to date.

        A file that is neither empty nor a sound database of ours, at most as new as this code, raises
        StoreError(permanent=True) and is left as it was. ``create=False`` (the read-only commands) creates
        no file and no directory: a missing database raises StoreMissing. ``exclusive`` (the daemon, ``once``)
        holds the store's lock until :meth:`close`, and raises StoreInUse while another process holds it
        (``lock.py``)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        job = partial(_open, os.fspath(path), busy_timeout, create=create, exclusive=exclusive)
        try:
            resolved, conn, lock_fd = await asyncio.get_running_loop().run_in_executor(executor, job)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(resolved, executor, conn, lock_fd)

    async def close(self) -> None:
        """Checkpoint the WAL into the database file and close. Closing twice is fine."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)
            if self._lock_fd is not None:  # after the last write: the next daemon may start now
                lock.release(self._lock_fd)
                self._lock_fd = None

    def _close(self) -> None:
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "closing") from exc
        finally:
            self._conn.close()

    async def load_tracks(self, host: str) -> dict[str, bytes]:
        """The tracker state of each group of ``host``."""
        return await self._call("reading the tracker state", queries.load_tracks, host)

    async def commit(
        self,
        host: str,
        *,
        digest: str | None = None,
        tracks: Mapping[str, bytes | None] = {},  # read only, and copied below
        phases: Sequence[PhaseRecord] = (),
        events: Sequence[Event] = (),
        check_runs: Sequence[CheckRun] = (),
        gates: Sequence[GateAction] = (),
    ) -> None:
        """Store one poll cycle of ``host`` in one transaction: its snapshot digest (None keeps the last one),
        tracker state per group (None deletes it), phases (replaced by id) and new events (an id that exists
        already is ignored). On any error nothing of it is written."""
        # Copies, so that the caller may reuse its containers while the store thread reads them.
        await self._call(
            "commit", queries.commit, host, digest, dict(tracks), tuple(phases), tuple(events),
            tuple(check_runs), tuple(gates),
        )  # fmt: skip

    async def dispatch(self, routes: Mapping[str, Sequence[str]]) -> None:
        """Hand undelivered events to their sinks (event id → sink names), in one transaction."""
        await self._call("dispatching events", queries.dispatch, {k: tuple(v) for k, v in routes.items()})

    async def pending_deliveries(self, sink: str, limit: int = 100) -> list[Event]:
        return await self._call("reading deliveries", queries.pending_deliveries, sink, limit)

    async def settle_deliveries(
        self, sink: str, ids: Sequence[str], status: DeliveryStatus, error: str | None = None
    ) -> None:
        await self._call("recording deliveries", queries.settle_deliveries, sink, tuple(ids), status, error)

    async def outbox_depth(self) -> int:
        return await self._call("reading the outbox", queries.outbox_depth)

    async def sink_deliveries(self) -> list[queries.SinkDeliveries]:
        """Per sink that has deliveries: how many wait or failed, and how its last attempt went."""
        return await self._call("reading deliveries", queries.sink_deliveries)

    async def last_event(self, host: str, kinds: Sequence[str]) -> Event | None:
        return await self._call("reading events", queries.last_event, host, tuple(kinds))

    async def check_runs(
        self, host: str | None = None, phase_id: str | None = None, *, pending: bool = False
    ) -> list[CheckRun]:
        return await self._call("reading check runs", queries.check_runs, host, phase_id, pending)

    async def gate_actions(
        self, host: str | None = None, phase_id: str | None = None, *, pending: bool = False
    ) -> list[GateAction]:
        return await self._call("reading gate actions", queries.gate_actions, host, phase_id, pending)

    async def phases(
        self, host: str | None = None, group: str | None = None, status: PhaseStatus | None = None,
        limit: int | None = None,
    ) -> list[PhaseRecord]:  # fmt: skip
        """Phases, newest first (by completion, else by opening)."""
        return await self._call("reading phases", queries.phases, host, group, status, limit)

    async def undelivered(self, limit: int = 1000) -> list[Event]:
        """Events not yet marked delivered, oldest first."""
        return await self._call("reading the outbox", queries.undelivered, limit)

    async def record_clean(self, record: CleanRecord) -> None:
        await self._call("recording a clean", queries.record_clean, record)

    async def cleans(self, host: str | None = None) -> list[CleanRecord]:
        """Recorded cleans, oldest first."""
        return await self._call("reading cleans", queries.cleans, host)

    async def hosts(self) -> list[str]:
        """Every host that has a row of any kind, sorted."""
        return await self._call("reading hosts", queries.hosts)

    async def _call(
        self,
        doing: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(connection, …)`` in the store thread. A cancelled caller stops waiting, not the call: its
        transaction still commits or rolls back as a whole."""
        if self._closed:
            raise StoreError(f"{self.path}: {doing} failed: the store is closed", permanent=True)
        job = partial(self._guarded, doing, partial(fn, self._conn, *args, **kwargs))
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    def _guarded(self, doing: str, job: Callable[[], T]) -> T:
        try:
            return job()
        except sqlite3.Error as exc:
            raise translate(exc, self.path, doing) from exc


def _open(
    given: str, busy_timeout: float, *, create: bool, exclusive: bool
) -> tuple[str, sqlite3.Connection, int | None]:
    """Check the files at ``given`` (``files.py``), inspect an existing database, take the lock if asked,
    then open the database and run the migrations."""
    path = os.path.abspath(os.path.expanduser(given))
    lock_fd = None
    try:
        try:
            if create:
                files.make_parents(os.path.dirname(path))
            if files.check(path, create=create):
                schema.inspect(path)
            # After the inspection: a file refused as foreign keeps nothing new beside it, not even a lock.
            if exclusive:
                lock_fd = lock.hold(path)
            files.narrow(path)
        except OSError as exc:
            raise StoreError(
                f"{path}: cannot create the state database: {exc.strerror}", permanent=True
            ) from exc
        try:
            conn = connect(path, busy_timeout)
        except sqlite3.Error as exc:
            raise translate(exc, path, "opening the state database") from exc
        try:
            schema.migrate(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise translate(exc, path, "migrating the state database") from exc
            raise
    except BaseException:
        if lock_fd is not None:
            lock.release(lock_fd)
        raise
    return path, conn, lock_fd
