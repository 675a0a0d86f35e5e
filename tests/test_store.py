"""The SQLite state store on real files: round trips, transactions, refused files, migrations and kill -9."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest

from checks.base import CheckStatus
from tests.harness import state_db
from watcher.errors import StoreError
from watcher.records import CheckRunStatus, CleanRecord, Event, PhaseRecord
from watcher.store import Store, schema

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))


def phase(pid: str, *, host: str = "h1", group: str = "g", minute: int = 0, done: int | None = None,
          **fields: Any) -> PhaseRecord:  # fmt: skip
    """A phase opened at T0 + ``minute``, completed at T0 + ``done`` minutes when ``done`` is given."""
    opened = T0 + timedelta(minutes=minute)
    completed = None if done is None else T0 + timedelta(minutes=done)
    status = "open" if done is None else "completed"
    return PhaseRecord(
        id=pid, host=host, group=group, status=status, opened_at=opened, completed_at=completed, **fields
    )


def event(eid: str, *, host: str = "h1", **data: Any) -> Event:
    return Event(id=eid, event="phase.completed", host=host, group="g", at=T0, data=data)


def clean(host: str, minute: int, *, dry_run: bool = False) -> CleanRecord:
    return CleanRecord(host=host, at=T0 + timedelta(minutes=minute), groups=["g"], mode="successful",
                       dry_run=dry_run, bytes_before=1000, bytes_after=None if dry_run else 10,
                       removed={"g": {"Success": 3}}, failed_labels={"g": []})  # fmt: skip


def ids(records: list[PhaseRecord] | list[Event]) -> list[str]:
    return [record.id for record in records]


# Blocking file helpers, kept out of the async tests' bodies.


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def pragma(path: Path, name: str) -> Any:
    """Read one PRAGMA through a plain connection, behind the store's back."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def run_sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "nested" / "state.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(db_path)
    yield opened
    await opened.close()


async def test_new_database_is_private_versioned_and_in_wal_mode(db_path: Path) -> None:
    """Opening a missing path creates 0o700 directories and a 0o600 WAL database at the current version."""
    opened = await Store.open(db_path)
    assert state_db.is_new(db_path)
    assert await opened.hosts() == []
    await opened.close()
    await opened.close()  # idempotent
    assert (mode_of(db_path.parent), mode_of(db_path.parent.parent), mode_of(db_path)) == (
        0o700,
        0o700,
        0o600,
    )
    assert pragma(db_path, "application_id") == schema.APPLICATION_ID
    assert pragma(db_path, "user_version") == len(schema.MIGRATIONS)
    assert pragma(db_path, "journal_mode") == "wal"


async def test_tilde_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``~`` in the path means the home directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    opened = await Store.open("~/.local/state/pueue-watcher/state.db")
    await opened.close()
    assert opened.path == str(tmp_path / ".local/state/pueue-watcher/state.db")
    assert mode_of(Path(opened.path)) == 0o600


async def test_everything_survives_a_reopen(db_path: Path) -> None:
    """Tracks, digests, phases, events and cleans read back equal after a reopen, datetimes exactly."""
    start = datetime(2024, 1, 2, 3, 4, 5, 6, PLUS2)
    rich = phase("p1", done=0, outcome="failed", counts={"Success": 3, "Failed": 1, "removed": 2}, tasks=6,
                 first_start=start, last_end=T0, failed_labels=["a"], fired=True)  # fmt: skip
    at = datetime(2024, 1, 2, 3, 4, 5, 999999, PLUS2)
    ev = Event(id="e1", event="phase.completed", host="h1", group=None, at=at, data={"n": [1, 2.5, None]})
    first = await Store.open(db_path)
    await first.commit(
        "h1", digest="abc", tracks={"g": b"\x00\xffblob", "g2": b""}, phases=[rich], events=[ev]
    )
    await first.commit("h2", digest="def", tracks={"x": b"2"})
    await first.record_clean(clean("h1", 5))
    await first.close()

    again = await Store.open(db_path)
    try:
        assert await again.load_tracks("h1") == {"g": b"\x00\xffblob", "g2": b""}
        assert await again.load_tracks("h2") == {"x": b"2"}
        assert await again.load_tracks("nobody") == {}
        assert (state_db.digest(db_path, "h1"), state_db.digest(db_path, "h2")) == ("abc", "def")
        assert state_db.digest(db_path, "nobody") is None
        [back] = await again.phases()
        assert back == rich
        assert back.first_start is not None
        assert back.first_start.isoformat() == "2024-01-02T03:04:05.000006+02:00"
        [back_event] = state_db.events(db_path)
        assert back_event == ev
        assert back_event.at.isoformat() == "2024-01-02T03:04:05.999999+02:00"
        assert await again.cleans() == [clean("h1", 5)]
        assert not state_db.is_new(db_path)
    finally:
        await again.close()


async def test_commit_updates_tracks_and_keeps_the_digest_when_none(store: Store) -> None:
    """A None track deletes that group's blob; digest=None keeps the last digest."""
    await store.commit("h1", digest="d1", tracks={"a": b"1", "b": b"2"})
    await store.commit("h1", tracks={"a": None, "b": b"3", "c": b"4"})
    assert await store.load_tracks("h1") == {"b": b"3", "c": b"4"}
    assert state_db.digest(store.path, "h1") == "d1"
    await store.commit("h1", digest="d2")
    assert state_db.digest(store.path, "h1") == "d2"


async def test_phase_upsert_changes_status(store: Store) -> None:
    """Committing a phase id again replaces the record: open becomes completed, still one row."""
    await store.commit("h1", phases=[phase("p1")])
    assert [p.status for p in await store.phases()] == ["open"]
    await store.commit("h1", phases=[phase("p1", done=9, outcome="success", tasks=4)])
    [done] = await store.phases()
    assert (done.status, done.outcome, done.tasks) == ("completed", "success", 4)
    assert done.completed_at == T0 + timedelta(minutes=9)
    assert await store.phases(status="open") == []


async def test_duplicate_event_id_is_ignored(store: Store) -> None:
    """An event id that exists already is not stored again, nor is its delivery state reset."""
    await store.commit("h1", events=[event("e1", n=1), event("e2")])
    await store.dispatch({"e1": ["log"]})
    await store.commit("h1", events=[event("e1", n=2), event("e3")])
    assert [(e.id, e.data) for e in state_db.events(store.path)] == [("e1", {"n": 1}), ("e2", {}), ("e3", {})]
    assert ids(await store.undelivered()) == ["e2", "e3"]


async def test_history_filters_and_order(store: Store) -> None:
    """phases() filters by host, group and status, and lists newest first by completion, else by opening."""
    await store.commit("h1", phases=[
        phase("old-done", minute=0, done=5), phase("open-late", minute=20),
        phase("new-done", minute=1, done=30), phase("other-group", group="x", minute=2),
    ])  # fmt: skip
    await store.commit("h2", phases=[phase("h2-done", host="h2", minute=3, done=10)])
    assert ids(await store.phases()) == ["new-done", "open-late", "h2-done", "old-done", "other-group"]
    assert ids(await store.phases(host="h1")) == ["new-done", "open-late", "old-done", "other-group"]
    assert ids(await store.phases(host="h1", group="g", status="completed")) == ["new-done", "old-done"]
    assert ids(await store.phases(group="x")) == ["other-group"]
    assert ids(await store.phases(status="open", limit=1)) == ["open-late"]
    assert ids(await store.phases(limit=2)) == ["new-done", "open-late"]
    assert await store.phases(host="nobody") == []


async def test_outbox_is_oldest_first_and_dispatching_empties_it(store: Store) -> None:
    """undelivered() lists in creation order up to a limit; dispatched ids leave it but stay stored."""
    await store.commit("h1", events=[event(f"e{i}") for i in range(5)])
    await store.commit("h2", events=[event("later", host="h2")])
    assert ids(await store.undelivered(limit=3)) == ["e0", "e1", "e2"]
    await store.dispatch({"e1": ["log"], "e3": [], "no-such-id": ["log"]})
    await store.dispatch({})
    assert ids(await store.undelivered()) == ["e0", "e2", "e4", "later"]
    assert ids(state_db.events(store.path)) == ["e0", "e1", "e2", "e3", "e4", "later"]
    assert ids(state_db.events(store.path, limit=2)) == ["e0", "e1"]
    assert [e.id for e in await store.pending_deliveries("log")] == ["e1"]


async def test_cleans_filter_by_host(store: Store) -> None:
    """Clean records come back oldest first, all of them or those of one host."""
    await store.record_clean(clean("h1", 9))
    await store.record_clean(clean("h2", 1, dry_run=True))
    await store.record_clean(clean("h1", 3))
    assert [(c.host, c.at.minute) for c in await store.cleans()] == [("h2", 1), ("h1", 3), ("h1", 9)]
    assert await store.cleans("h1") == [clean("h1", 3), clean("h1", 9)]
    assert await store.cleans("nobody") == []


async def test_is_new_until_the_first_commit(db_path: Path) -> None:
    """The store is new until some host commits (a clean is not a commit), then stays not new for good."""
    opened = await Store.open(db_path)
    await opened.record_clean(clean("h1", 0))
    assert state_db.is_new(db_path)
    await opened.commit("h1")
    assert not state_db.is_new(db_path)
    await opened.close()
    opened = await Store.open(db_path)
    assert not state_db.is_new(db_path)
    await opened.close()


async def test_hosts_lists_every_host_with_a_row(store: Store) -> None:
    """hosts() lists, sorted, each host that has a row of any kind: a commit (even an empty one), a clean."""
    await store.commit("h2", digest="d2", tracks={"g": b"2"})
    await store.record_clean(clean("h3", 0))
    await store.commit("h1")
    assert await store.hosts() == ["h1", "h2", "h3"]


async def test_failed_commit_writes_nothing(store: Store) -> None:
    """An event that cannot be encoded fails the commit; the tracks, digest and phases before it vanish."""
    await store.commit("h1", digest="d0", tracks={"g": b"0"})
    with pytest.raises(TypeError):
        await store.commit("h1", digest="d1", tracks={"g": b"1", "new": b"x"}, phases=[phase("p1", done=1)],
                           events=[event("ok"), event("bad", thing=object())])  # fmt: skip
    assert await store.load_tracks("h1") == {"g": b"0"}
    assert state_db.digest(store.path, "h1") == "d0"
    assert await store.phases() == []
    assert state_db.events(store.path) == []
    await store.commit("h1", events=[event("ok")])  # the store is still usable
    assert ids(state_db.events(store.path)) == ["ok"]


async def test_naive_datetime_is_refused_and_the_store_stays_new(store: Store) -> None:
    """A naive datetime fails the commit, and a failed first commit does not end the first run."""
    naive = PhaseRecord(id="p", host="h1", group="g", status="open", opened_at=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.commit("h1", tracks={"g": b"1"}, phases=[naive])
    assert state_db.is_new(store.path)
    assert await store.hosts() == []


async def test_full_disk_is_temporary_and_rolled_back(store: Store, db_path: Path) -> None:
    """A full disk is a temporary StoreError; the commit leaves nothing and the file stays sound."""
    await store.commit("h1", tracks={"g": b"before"})
    pages = await store._call("probe", lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    await store._call("probe", lambda conn: conn.execute(f"PRAGMA max_page_count = {pages + 2}"))
    big = [phase(f"p{i}", done=1, failed_labels=["x" * 200] * 20) for i in range(200)]
    with pytest.raises(StoreError) as caught:
        await store.commit("h1", tracks={"g": b"after"}, phases=big)
    message = str(caught.value)
    assert not caught.value.permanent
    assert message == f"{db_path}: commit failed: database or disk is full"
    assert await store.load_tracks("h1") == {"g": b"before"}
    assert await store.phases() == []
    await store._call("probe", lambda conn: conn.execute("PRAGMA max_page_count = 1000000"))
    await store.commit("h1", tracks={"g": b"after"}, phases=big)
    assert len(await store.phases()) == 200
    assert await store._call("probe", lambda conn: conn.execute("PRAGMA quick_check").fetchall()) == [("ok",)]


async def test_locked_database_is_temporary(db_path: Path) -> None:
    """A write lock held by another process past the busy timeout is a temporary StoreError."""
    opened = await Store.open(db_path, busy_timeout=0.05)
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="database is locked") as caught:
            await opened.commit("h1", tracks={"g": b"1"})
        assert not caught.value.permanent
        assert await opened.load_tracks("h1") == {}  # readers are not blocked in WAL mode
    finally:
        other.execute("ROLLBACK")
        other.close()
    await opened.commit("h1", tracks={"g": b"1"})
    await opened.close()


async def test_closed_store_refuses_calls(store: Store) -> None:
    """After close() every call raises StoreError instead of touching a closed connection."""
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.hosts()


async def _ours(path: Path) -> None:
    """A database of ours with enough rows to span many pages."""
    opened = await Store.open(path)
    big = [
        phase(f"p{i}", done=1, failed_labels=[f"task label {i}-{j}" for j in range(20)]) for i in range(400)
    ]
    await opened.commit("h1", phases=big, events=[event(f"e{i}") for i in range(400)])
    await opened.close()


def _overwrite_middle_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 4096 // 2 * 4096
    data[middle : middle + 3 * 4096] = os.urandom(3 * 4096)
    path.write_bytes(bytes(data))


async def _make(kind: str, path: Path) -> None:
    write(path, b"")
    if kind == "text":
        write(path, b"[watcher]\nstate_path = 'oops'\n")
    elif kind == "random":
        write(path, os.urandom(16384))
    elif kind == "other-app":
        run_sql(path, "PRAGMA application_id = 1234", "CREATE TABLE t (x)")
    elif kind == "tables-without-id":
        run_sql(path, "CREATE TABLE notes (body TEXT)", "INSERT INTO notes VALUES ('hello')")
    elif kind == "newer":
        await _ours(path)
        run_sql(path, f"PRAGMA user_version = {len(schema.MIGRATIONS) + 1}")
    else:
        await _ours(path)
        _overwrite_middle_pages(path)


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("text", "not a SQLite database"),
        ("random", "not a SQLite database"),
        ("other-app", "another application (application_id 0x000004d2)"),
        ("tables-without-id", "another application"),
        (
            "newer",
            f"newer pueue-watcher (schema version {len(schema.MIGRATIONS) + 1}, this one knows up to "
            f"{len(schema.MIGRATIONS)})",
        ),
        ("corrupt", "corrupt"),
    ],
)
async def test_unusable_file_is_refused_untouched(db_path: Path, kind: str, problem: str) -> None:
    """A foreign, newer or corrupt file raises a permanent one-line StoreError naming it, and is unchanged."""
    await _make(kind, db_path)
    before = sha256(db_path)
    listing = sorted(os.listdir(db_path.parent))
    with pytest.raises(StoreError) as caught:
        await Store.open(db_path)
    message = str(caught.value)
    assert caught.value.permanent
    assert problem in message
    assert message.startswith(f"{db_path}: ")
    assert "\n" not in message
    assert "Traceback" not in message
    assert sha256(db_path) == before
    assert sorted(os.listdir(db_path.parent)) == listing  # no -wal or -shm left beside it


async def test_empty_file_is_initialised(db_path: Path) -> None:
    """A 0-byte file (as `touch` leaves it) becomes a new store."""
    write(db_path, b"")
    opened = await Store.open(db_path)
    assert state_db.is_new(db_path)
    await opened.commit("h1", digest="d")
    await opened.close()
    assert pragma(db_path, "application_id") == schema.APPLICATION_ID


async def test_later_migration_is_applied(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database opened by code that knows one more migration is migrated and keeps its rows."""
    await _ours(db_path)
    expected = len(schema.MIGRATIONS) + 1
    v2 = """
        CREATE TABLE later_deliveries (
            event_id TEXT NOT NULL REFERENCES events (id),
            sink TEXT NOT NULL,  -- a comment; with a semicolon
            delivered_at TEXT,
            PRIMARY KEY (event_id, sink)
        );
        INSERT INTO later_deliveries (event_id, sink) SELECT id, 'log' FROM events;
    """
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, v2])
    opened = await Store.open(db_path)
    assert len(state_db.events(db_path)) == 400
    count = await opened._call(
        "probe", lambda conn: conn.execute("SELECT count(*) FROM later_deliveries").fetchone()[0]
    )
    assert count == 400
    await opened.close()
    assert pragma(db_path, "user_version") == expected


async def test_failed_migration_is_rolled_back(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration that fails half way is undone whole: the version and the tables stay as they were."""
    await _ours(db_path)
    broken = "CREATE TABLE half (x);\nINSERT INTO no_such_table VALUES (1);"
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, broken])
    with pytest.raises(StoreError, match="migrating the state database failed: no such table") as caught:
        await Store.open(db_path)
    assert caught.value.permanent
    monkeypatch.undo()
    assert pragma(db_path, "user_version") == len(schema.MIGRATIONS)
    opened = await Store.open(db_path)
    tables = await opened._call(
        "probe", lambda conn: conn.execute("SELECT name FROM sqlite_master").fetchall()
    )
    assert ("half",) not in tables
    assert len(await opened.phases()) == 400
    await opened.close()


async def test_slow_commit_does_not_block_the_event_loop(db_path: Path) -> None:
    """While a commit waits for another writer's lock the loop ticks on; sqlite runs in the store thread."""
    opened = await Store.open(db_path)
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the store's commit now waits in SQLite's busy handler
    committing = asyncio.create_task(opened.commit("h1", tracks={"g": b"1"}))
    # What the commit was doing at each of ten ticks of the loop. Run in the loop's thread, the commit would
    # hold the loop in the busy handler: no tick until it gave up (done, with "database is locked").
    seen = []
    for _ in range(10):
        await asyncio.sleep(0.005)
        seen.append("waiting" if not committing.done() else "done")
    assert seen == ["waiting"] * 10
    other.execute("ROLLBACK")
    other.close()
    await committing
    assert await opened.load_tracks("h1") == {"g": b"1"}
    store_thread = await opened._call("probe", lambda conn: threading.current_thread())
    assert store_thread is not threading.current_thread()
    assert store_thread.name.startswith("store")
    await opened.close()


# The child commits batch after batch and says so after each one; the parent kills it at some point.
CHILD = """
import asyncio, sys
from datetime import UTC, datetime
from watcher.records import Event, PhaseRecord
from watcher.store import Store

async def main(path, size):
    store = await Store.open(path)
    batch = 0
    while True:
        now = datetime.now(UTC)
        phases = [PhaseRecord(id=f"p{batch}-{i}", host="h", group="g", status="completed", opened_at=now,
                              completed_at=now, failed_labels=["x" * 100] * 20) for i in range(size)]
        events = [Event(id=f"e{batch}-{i}", event="phase.completed", host="h", group="g", at=now)
                  for i in range(size)]
        tracks = {"g": str(batch).encode()}
        await store.commit("h", digest=f"d{batch}", tracks=tracks, phases=phases, events=events)
        print(f"committed {batch}", flush=True)
        batch += 1

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""
BATCH = 40


@pytest.mark.parametrize("kill_after", [1, 7, 25])
def test_kill_9_neither_loses_nor_repeats(tmp_path: Path, kill_after: int) -> None:
    """After SIGKILL mid-commit each reported commit is there once, and the one in flight all or nothing."""
    path = tmp_path / "state.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", CHILD, str(path), str(BATCH)]
    child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for _ in range(kill_after):
        assert child.stdout.readline().startswith("committed")
    child.send_signal(signal.SIGKILL)  # most likely inside the next commit, which is where the time goes
    child.wait()
    reported = kill_after + child.stdout.read().count("committed")
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    async def reopen() -> tuple[list[PhaseRecord], list[Event], str | None, dict[str, bytes]]:
        opened = await Store.open(path)  # refuses a file that fails quick_check
        try:
            found = (await opened.phases(), state_db.events(path), state_db.digest(path, "h"),
                     await opened.load_tracks("h"))  # fmt: skip
            # A restart replays the last cycle: its events are not stored a second time.
            await opened.commit("h", events=found[1][-BATCH:])
            assert len(state_db.events(path)) == len(found[1])
            return found
        finally:
            await opened.close()

    phases, events, digest, tracks = asyncio.run(reopen())
    stored = len(events) // BATCH
    assert stored in (reported, reported + 1)  # plus the commit in flight, if it reached COMMIT
    assert sorted(ids(phases)) == sorted(f"p{b}-{i}" for b in range(stored) for i in range(BATCH))
    assert ids(events) == [f"e{b}-{i}" for b in range(stored) for i in range(BATCH)]
    assert (digest, tracks) == (f"d{stored - 1}", {"g": str(stored - 1).encode()})
    assert pragma(path, "quick_check") == "ok"


async def test_version_1_database_gains_check_runs_and_gates(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database written before checks existed (schema 1) is migrated to the latest and keeps its phases."""
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
    await _ours(db_path)
    monkeypatch.undo()
    assert pragma(db_path, "user_version") == 1
    store = await Store.open(db_path)
    assert len(await store.phases()) == 400
    assert await store.check_runs() == []
    await store.close()
    assert pragma(db_path, "user_version") == len(schema.MIGRATIONS)


async def test_check_runs_and_gates_round_trip(db_path: Path) -> None:
    """Pending check runs and gates committed with a phase, then their results, replace each other by key."""
    from watcher.records import CheckRun, GateAction

    store = await Store.open(db_path)
    pending = CheckRun(phase_id="h/g/1", check="neg", host="h", group="g", status="pending")
    gate = GateAction(phase_id="h/g/1", host="h", after="g", start="g2", status="pending")
    await store.commit("h", check_runs=[pending], gates=[gate])
    assert await store.check_runs(pending=True) == [pending]
    done = msgspec.structs.replace(pending, status="ok", result={"violations": 0}, at=T0)
    await store.commit("h", check_runs=[done])
    assert await store.check_runs(pending=True) == []
    assert await store.check_runs(phase_id="h/g/1") == [done]
    assert await store.gate_actions(host="h", pending=True) == [gate]
    held = msgspec.structs.replace(gate, status="held", reason="check neg failed", at=T0)
    await store.commit("h", gates=[held])
    assert await store.gate_actions(pending=True) == []
    assert await store.gate_actions(phase_id="h/g/1") == [held]
    await store.close()


def test_check_run_statuses_are_pending_then_a_check_status() -> None:
    """A check run's stored status is "pending" or one of CheckStatus's values, and nothing else."""
    assert set(get_args(CheckRunStatus)) == {"pending", *(status.value for status in CheckStatus)}
