"""The state database's files: never followed through a link, never another user's, always 0600."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.harness.fleet import REPO, write_config
from watcher.errors import StoreError, StoreInUse, StoreMissing, StorePathUnsafe
from watcher.store import Store

NOBODY = 65534


def mode_of(path: Path) -> int:
    return path.lstat().st_mode & 0o7777


def owner_of(path: Path) -> int:
    return path.lstat().st_uid


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Blocking file helpers, kept out of the async tests' bodies.


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def companion(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def write(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def plant_link(link: Path, target: Path) -> None:
    """``link`` → ``target``; a database at ``link`` is moved beside the target first."""
    if link.exists():
        link.rename(target.with_name("real.db"))
    link.symlink_to(target)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


async def _make_store(path: Path) -> None:
    store = await Store.open(path)
    await store.commit("h1", digest="d1")
    await store.close()


async def _refused(path: Path) -> str:
    with pytest.raises(StorePathUnsafe) as caught:
        await Store.open(path)
    assert isinstance(caught.value, StoreError) and caught.value.permanent
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o277])
async def test_a_new_database_is_0600_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    """The database, and the -wal and -shm that SQLite makes beside it, are 0600 under any umask."""
    path = tmp_path / "state" / "state.db"
    with umask(mask):
        store = await Store.open(path)
        try:
            await store.commit("h1", digest="d1")  # writes the -wal
            assert {name: mode_of(tmp_path / "state" / name) for name in os.listdir(path.parent)} == {
                "state.db": 0o600,
                "state.db-wal": 0o600,
                "state.db-shm": 0o600,
            }
        finally:
            await store.close()
    assert mode_of(path) == 0o600


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
async def test_a_link_at_the_database_or_beside_it_is_refused(tmp_path: Path, suffix: str) -> None:
    """A symbolic link at state.db, state.db-wal or state.db-shm is refused in one line naming it, and what it
    points to is left as it was: not written, not chmod'ed, nothing created beside it."""
    path = tmp_path / "state.db"
    await _make_store(path)
    target_dir = tmp_path / "elsewhere"
    target_dir.mkdir()
    target = target_dir / "precious"
    target.write_bytes(b"the operator's file\n")
    target.chmod(0o644)
    link = companion(path, suffix)  # a -wal or -shm does not exist after a clean close: the link is new
    plant_link(link, target)
    message = await _refused(path)
    assert message == f"{link}: a symbolic link; refusing to follow it (name the file itself)"
    assert (digest(target), mode_of(target)) == (hashlib.sha256(b"the operator's file\n").hexdigest(), 0o644)
    assert sorted(os.listdir(target_dir)) == sorted(["precious", *(["real.db"] if not suffix else [])])


async def test_a_dangling_link_is_not_created_through(tmp_path: Path) -> None:
    """A link to a file that does not exist yet is refused, not followed to create the database there."""
    path = tmp_path / "state.db"
    path.symlink_to(tmp_path / "would-be-created.db")
    await _refused(path)
    assert not (tmp_path / "would-be-created.db").exists()


async def test_an_open_database_is_narrowed_to_0600_and_logged(tmp_path: Path) -> None:
    """A database (and a leftover -wal) that others may read is set to 0600, with a warning per file; SQLite
    gives the -wal and -shm it opens the database's mode first, so they are narrowed (and named) too."""
    path = tmp_path / "state.db"
    await _make_store(path)
    path.chmod(0o644)
    wal, shm = companion(path, "-wal"), companion(path, "-shm")
    write(wal, b"", 0o666)
    with capture_logs() as logs:
        store = await Store.open(path)
        try:
            assert (mode_of(path), mode_of(wal), mode_of(shm)) == (0o600, 0o600, 0o600)
        finally:
            await store.close()
    narrowed = {entry["path"]: entry for entry in logs if entry["event"] == "store.permissions_narrowed"}
    assert set(narrowed) == {str(path), str(wal), str(shm)}
    assert narrowed[str(path)]["was"] == "0644"
    assert {entry["log_level"] for entry in narrowed.values()} == {"warning"}
    with capture_logs() as again:
        store = await Store.open(path)
        await store.close()
    assert not [entry for entry in again if entry["event"] == "store.permissions_narrowed"]


async def test_a_foreign_file_is_refused_with_its_mode_kept(tmp_path: Path) -> None:
    """A file refused as not ours (another application's) is not narrowed: it is left exactly as it was."""
    path = tmp_path / "state.db"
    path.write_bytes(b"SQLite format 3\0" + b"\x01" * 200)
    path.chmod(0o644)
    with pytest.raises(StoreError):
        await Store.open(path)
    assert mode_of(path) == 0o644


@pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true",
    reason="making a file of another user needs root (under CI=true it runs, and fails without root)",
)
@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
async def test_another_users_file_is_refused_untouched(tmp_path: Path, suffix: str) -> None:
    """A database, -wal or -shm owned by another user is refused, root included, and keeps owner and mode."""
    path = tmp_path / "state.db"
    await _make_store(path)
    theirs = companion(path, suffix)
    write(theirs, theirs.read_bytes() if not suffix else b"", 0o644)
    os.chown(theirs, NOBODY, NOBODY)
    before = digest(path)
    message = await _refused(path)
    assert message == (
        f"{theirs}: owned by uid {NOBODY}, not by this user (uid {os.geteuid()}); refusing to touch it: "
        "run as its owner"
    )
    assert (owner_of(theirs), mode_of(theirs), digest(path)) == (NOBODY, 0o644, before)


@pytest.mark.parametrize("mode", [0o777, 0o1777])
async def test_a_directory_everyone_may_write_to_is_refused(tmp_path: Path, mode: int) -> None:
    """A state directory that every user may write to (sticky or not) is refused before any file is made."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    path = shared / "state.db"
    message = await _refused(path)
    assert message.startswith(f"{path}: its directory is writable by every user")
    assert list(shared.iterdir()) == []


def test_history_refuses_a_linked_state_in_one_line(tmp_path: Path) -> None:
    """``history`` as a real process: exit 2, one line on stderr naming the link, stdout empty."""
    path = tmp_path / "state.db"
    path.symlink_to(tmp_path / "target.db")
    config = write_config(tmp_path / "c.toml", [], watcher={"state_path": str(path)}, metrics={"listen": ""})
    proc = subprocess.run(
        [sys.executable, "-m", "watcher", "history", "--json", "-c", str(config)],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: {path}: a symbolic link; refusing to follow it (name the file itself)"
    ]
    assert not (tmp_path / "target.db").exists()


def test_history_narrows_quietly(tmp_path: Path) -> None:
    """``history --json`` on a 0644 database prints only its document, and leaves the file 0600."""
    path = tmp_path / "state.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    config = write_config(tmp_path / "c.toml", [], watcher={"state_path": str(path)}, metrics={"listen": ""})
    proc = subprocess.run(
        [sys.executable, "-m", "watcher", "history", "--json", "-c", str(config)],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert (proc.returncode, json.loads(proc.stdout), proc.stderr) == (0, [], "")
    assert mode_of(path) == 0o600


async def test_a_read_only_open_creates_nothing(tmp_path: Path) -> None:
    """``create=False`` (``history``): a missing database, or a missing directory, raises StoreMissing in one
    line and creates no file or directory."""
    for path in (tmp_path / "state.db", tmp_path / "absent" / "state.db"):
        with pytest.raises(StoreMissing) as caught:
            await Store.open(path, create=False)
        assert str(caught.value) == f"no state store at {path}"
        assert names(tmp_path) == []


async def test_an_exclusive_store_is_held_until_closed(tmp_path: Path) -> None:
    """``exclusive`` (``run``, ``once``) takes ``state.db.lock`` (0600, this pid in it); a second exclusive
    open is refused in one line naming the holder, a plain open is not; closing frees it."""
    path = tmp_path / "state" / "state.db"
    with umask(0o022):
        first = await Store.open(path, exclusive=True)
    lock = companion(path, ".lock")
    try:
        assert (lock.read_text(), mode_of(lock)) == (f"{os.getpid()}\n", 0o600)
        with pytest.raises(StoreInUse) as caught:
            await Store.open(path, exclusive=True)
        assert caught.value.permanent
        assert str(caught.value) == f"state store {path} is in use by pid {os.getpid()}"
        reader = await Store.open(path, create=False)
        await reader.close()
    finally:
        await first.close()
    second = await Store.open(path, exclusive=True)
    await second.close()


async def test_a_linked_lock_file_is_refused(tmp_path: Path) -> None:
    """A link planted at ``state.db.lock`` is not followed: its target is neither created nor written."""
    path = tmp_path / "state.db"
    target = tmp_path / "target"
    companion(path, ".lock").symlink_to(target)
    message = await _refused_exclusive(path)
    assert message == f"{path}.lock: a symbolic link; refusing to follow it (name the file itself)"
    assert not target.exists()


async def _refused_exclusive(path: Path) -> str:
    with pytest.raises(StorePathUnsafe) as caught:
        await Store.open(path, exclusive=True)
    return str(caught.value)
