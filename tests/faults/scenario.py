"""Helpers of the daemon fault tests (SIGKILL, a full disk, a foreign state file): an SSH proxy that can hold
a poll in flight, a pueue wrapper that shows when a clean runs, a reader of the daemon's new log lines, and
read-only looks into the state database.

Each one observes the daemon from the outside; none of them changes the daemon or the pueue simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.harness.proxy import CountingProxy
from tests.harness.receiver import Request
from tests.harness.sshd import SSHServer


@dataclass
class HoldingProxy(CountingProxy):
    """A TCP proxy in front of sshd. :meth:`arm` makes it hold the next bytes the watcher sends (a poll's
    request, or the first packet of a connect) instead of passing them on: the watcher then waits for an
    answer that never comes, so a kill at that moment lands in the middle of a poll."""

    held: threading.Event = field(default_factory=threading.Event)
    _armed: bool = False

    def arm(self) -> None:
        self.held.clear()
        self._armed = True

    def disarm(self) -> None:
        self._armed = False

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool) -> None:
        holding = False
        try:
            while data := await reader.read(65536):
                if up and (holding or self._armed):
                    # Swallowed: this connection is stuck from now on, as behind a link that went silent.
                    holding, self._armed = True, False
                    self.held.set()
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def known_hosts_for(server: SSHServer, port: int, path: Path) -> Path:
    """A known_hosts file that vouches for ``server``'s host key at ``127.0.0.1:port`` (a proxy's port)."""
    kind, key = (server.root / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    path.write_text(f"[127.0.0.1]:{port} {kind} {key}\n")
    return path


def noting_pueue(real: Path, path: Path, marker: Path, clean_seconds: float) -> Path:
    """A ``pueue`` for the host entry that notes each ``clean`` in ``marker`` ("start TIME" before, "end"
    after) and takes ``clean_seconds`` longer (as a clean of a large state does); it runs the real client."""
    note = shlex.quote(str(marker))
    path.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = clean ]; then\n'
        f'  echo "start $(date +%s.%N)" >> {note}; sleep {clean_seconds}\n'
        f'  {shlex.quote(str(real))} "$@"; rc=$?; echo end >> {note}; exit $rc\n'
        "fi\n"
        f'exec {shlex.quote(str(real))} "$@"\n'
    )
    path.chmod(0o755)
    return path


def cleans_started(marker: Path) -> int:
    return sum(line.startswith("start") for line in marker.read_text().splitlines())


def clean_running(marker: Path, stale_after: float = 10.0) -> bool:
    """Whether a clean noted by :func:`noting_pueue` has started and not ended (one older than
    ``stale_after`` seconds counts as gone)."""
    lines = marker.read_text().splitlines()
    starts = [float(line.split()[1]) for line in lines if line.startswith("start")]
    ends = sum(line == "end" for line in lines)
    return len(starts) > ends and time.time() - starts[-1] < stale_after


class LogTail:
    """The JSON lines the daemon appended to its log since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def new(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        self._offset += len(data)
        complete, _, self._partial = (self._partial + data).rpartition(b"\n")
        lines = []
        for raw in complete.splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                lines.append({"event": "<not json>", "line": raw.decode(errors="replace")})
        return lines


def read_store(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the state database, beside the daemon (WAL: readers never block it)."""
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def integrity(path: Path) -> list[str]:
    """``PRAGMA integrity_check`` of the state database: ``["ok"]`` when it is sound."""
    return [row[0] for row in read_store(path, "PRAGMA integrity_check")]


def received_events(requests: list[Request]) -> list[dict[str, Any]]:
    """Every event of every webhook request, repeats included."""
    return [event for request in requests if request.body for event in request.json()["events"]]
