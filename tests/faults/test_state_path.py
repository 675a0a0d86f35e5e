"""A corrupt or foreign file at ``watcher.state_path``, met by the commands that open the store (``run``,
``once``, ``history``) as real processes: each says so in one line that names the path and exits 2, and the
file is left byte for byte as it was, with nothing created beside it.

tests/test_store.py covers the same files at the level of ``Store.open``; the files are made by its helper.
An empty file is not refused: SQLite itself treats 0 bytes as an empty database, the store creates its file
empty before the first migration (so a kill -9 at the very first start leaves one), and there is nothing in it
to lose. Refusing it would turn that kill into a daemon that never starts again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from tests.faults.ledger import Ledger
from tests.harness.fleet import watcher, write_config
from tests.test_store import _make
from watcher.store import schema

# Real processes of the watcher, and no service: part of the fast tier (`./dev test fast`).

COMMANDS = (("run",), ("once",), ("once", "--json"), ("history", "--json"))

KINDS = {
    "random": "not a SQLite database",
    "text": "not a SQLite database",
    "other-app": "a SQLite database of another application (application_id 0x000004d2)",
    "tables-without-id": "a SQLite database of another application (it has tables",
    "newer": f"written by a newer pueue-watcher (schema version {len(schema.MIGRATIONS) + 1}",
    "corrupt": "the state database is corrupt",
    "truncated": "the state database is corrupt",
    "directory": "not a regular file",
}


def make(kind: str, path: Path) -> None:
    if kind == "directory":
        path.mkdir(parents=True)
        (path / "keep").write_text("mine\n")
        return
    asyncio.run(_make("corrupt" if kind == "truncated" else kind, path))
    if kind == "truncated":  # a copy cut short (a full disk, a copy in progress)
        with path.open("r+b") as file:
            file.truncate(path.stat().st_size // 2)


def fingerprint(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its bytes."""
    return {
        str(file.relative_to(root)): hashlib.sha256(file.read_bytes()).hexdigest()
        for file in sorted(root.rglob("*"))
        if file.is_file()
    }


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_foreign_state_file_is_refused_untouched(tmp_path: Path, kind: str, ledger: Ledger) -> None:
    """``run``, ``once`` and ``history`` print one line naming the file and why, exit 2, change nothing."""
    home = tmp_path / "state"
    home.mkdir()
    path = home / "state.db"
    make(kind, path)
    before = fingerprint(home)
    config = write_config(tmp_path / "c.toml", [], watcher={"state_path": str(path)}, metrics={"listen": ""})
    with ledger.fault(f"state file: {kind}", count=len(COMMANDS)):
        for command in COMMANDS:
            proc = watcher(*command, "-c", str(config), timeout=60)
            said = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
            assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
            assert len(said) == 1, (command, said)
            (line,) = said
            if command[0] == "history":  # a plain message on stderr
                message = line.removeprefix("error: ")
            else:  # the daemon's log line (JSON when stdout is not a terminal)
                logged = json.loads(line)
                assert (logged["event"], logged["level"]) == ("store.unusable", "error")
                message = logged["error"]
            assert message.startswith(f"{path}: "), message
            assert KINDS[kind] in message, message
            assert "refusing to touch it" in message
            assert fingerprint(home) == before, f"{command[0]} changed the files beside the state"
            assert sorted(os.listdir(home)) == sorted(before if kind != "directory" else ["state.db"])


def test_an_empty_state_file_becomes_a_new_store(tmp_path: Path) -> None:
    """A 0-byte file (``touch``, or a first start killed before its first migration) becomes a new store."""
    path = tmp_path / "state.db"
    path.touch()
    config = write_config(tmp_path / "c.toml", [], watcher={"state_path": str(path)}, metrics={"listen": ""})
    proc = watcher("history", "--json", "-c", str(config), timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "[]\n", "")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    finally:
        conn.close()
    assert app_id == schema.APPLICATION_ID
