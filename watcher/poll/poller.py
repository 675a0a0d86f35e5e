"""Poll one host: one remote round trip, then parse, keeping the last snapshot when nothing changed."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from watcher.config import HostConfig, WatcherSection
from watcher.errors import HostError, HostTimeout, ProbeParseError, PueueParseError, TooManyGroups
from watcher.poll.select import NONE_DROPPED, Dropped, select_groups
from watcher.probes.proc import ProbeSample, parse_block
from watcher.pueue.model import Snapshot, Status
from watcher.pueue.parse import decode_status, snapshot_of
from watcher.pueue.staleness import suspect
from watcher.remote.payload import release
from watcher.remote.poll import RemoteState, check_head, poll_argv, read_output
from watcher.remote.session import SESSION_END, WAKE_MARKER, session_argv, session_request
from watcher.transport import Transport
from watcher.transport.base import MAX_ANSWER_BYTES

log = structlog.get_logger("watcher.poll")

# Payloads larger than this (and local state files, and anything compressed: a few KB of zstd can inflate to
# the 1 GiB limit) are decompressed, parsed and digested in a worker thread, so that one large or hostile host
# does not stall the event loop, and with it every other host and the metrics endpoint.
_THREAD_THRESHOLD = 256 * 1024

#: Defaults of watcher.max_groups and watcher.max_group_name (select.py says why there are limits).
MAX_GROUPS = 200
MAX_GROUP_NAME = 256


def _probes(remote: RemoteState) -> ProbeSample | None:
    if remote.probe_text is None:
        return None
    try:
        return parse_block(remote.probe_text)
    except ProbeParseError:
        return None


#: A document with more groups than this many times ``max_groups`` is not read at all (TooManyGroups): up to
#: it, decoding costs a few milliseconds, and the groups kept are chosen (select.py).
GROUPS_CEILING = 20


def _parse(remote: RemoteState, limit: int, max_groups: int | None = None) -> Snapshot:
    payload = remote.payload(limit)
    try:
        decoded = decode_status(payload)
    finally:
        # The document is not needed while the tasks are built: unmap a local file, drop a decompressed one.
        release(payload)
        del payload
    return snapshot_of(decoded, None if max_groups is None else max_groups * GROUPS_CEILING)


@dataclass(frozen=True, slots=True)
class _Digest:
    """What one payload comes to: the kept groups' snapshot, and what the poller keeps of the whole."""

    snapshot: Snapshot
    dropped: Dropped
    file_counts: tuple[int, int]  # PollResult.file_done, file_tasks (of the whole document)
    suspect: str | None


def _digest(remote: RemoteState, limit: int, globs: Sequence[str], max_groups: int, max_name: int,
            keep: frozenset[str]) -> _Digest:  # fmt: skip
    """Everything a payload costs in proportion to its size, in one call (a worker thread's, when large)."""
    parsed = _parse(remote, limit, max_groups)
    snapshot, dropped = select_groups(parsed, globs, max_groups=max_groups, max_name=max_name, keep=keep)
    done = sum(t.status is Status.DONE for t in parsed.tasks)
    return _Digest(snapshot, dropped, (done, len(parsed.tasks)), suspect(parsed, snapshot.groups))


@dataclass(frozen=True, slots=True)
class PollResult:
    host: str
    at: datetime
    duration: float
    snapshot: Snapshot | None = None
    error: str | None = None
    reason: str | None = None  # a short label of the failure, for metrics
    permanent: bool = False  # the failure needs an operator (HostError.temporary is False): a refused key
    state_file_bytes: int | None = None
    source: str | None = None  # "state", "status", "unchanged" or "confirm" (pueue status over a stale file)
    wire_bytes: int = 0
    daemon_up: bool | None = None
    probes: ProbeSample | None = None
    # Counted in the whole state file the snapshot comes from (every group, watched or not), when a state
    # file was read: its Done tasks (what hygiene's guard counts again before a clean, remote/clean.py),
    # and all its tasks. A confirmation keeps the counts of the file it stands in for: its snapshot is
    # `pueue status` output, whose DependencyFailed tasks the file still holds as Queued.
    file_done: int | None = None
    file_tasks: int | None = None
    dropped: Dropped = NONE_DROPPED  # groups left out by the per-host limits (select.py)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class HostPoller:
    """Polls one host through its transport. Remembers the state file's fingerprint so that an unchanged
    queue costs a few hundred bytes and no parsing."""

    host: HostConfig
    transport: Transport
    timeout: float
    max_groups: int = MAX_GROUPS
    max_group_name: int = MAX_GROUP_NAME
    max_answer_bytes: int = MAX_ANSWER_BYTES  # the most read of one answer, and a payload decompresses to
    #: The groups the watcher tracks: kept first when a host has more than ``max_groups`` (select.py).
    keep: frozenset[str] = frozenset()
    _dropped: Dropped = field(default=NONE_DROPPED, init=False)
    _fingerprint: str = field(default="", init=False)
    _woken: bool = field(default=False, init=False)  # a long poll saw a change the next poll must show
    _wake_mark: str = field(default="", init=False)  # the wake marker as the last long poll left it
    _local_state: str = field(default="", init=False)  # the state file's path (local transport: its handoff)
    # The wake marker as the local transport's last long poll left it (False: not looked at yet).
    _local_mark: tuple[int, int, int] | bool | None = field(default=False, init=False)
    _snapshot: Snapshot | None = field(default=None, init=False)
    _requests: int = field(default=0, init=False)
    # Why the snapshot in hand may be stale (staleness.py), or None; and how many polls of the same file
    # to let pass before the next confirmation (it doubles while the same file stays suspect, up to 32).
    _suspect: str | None = field(default=None, init=False)
    _confirm_wait: int = field(default=0, init=False)
    _confirm_backoff: int = field(default=1, init=False)
    _file_counts: tuple[int, int] | None = field(default=None, init=False)  # PollResult.file_done, file_tasks
    #: How many times ``pueue status`` confirmed a state file that could be stale (for tests and metrics).
    confirmations: int = field(default=0, init=False)

    async def poll(self) -> PollResult:
        started = time.monotonic()
        at = datetime.now(UTC)
        try:
            async with asyncio.timeout(self.timeout):
                fresh = self._snapshot is None
                woken = self._woken  # a long poll woke this poll: the change may be one the file lacks
                remote = await self._fetch()
                snapshot = await self._snapshot_of(remote)
                if (fresh or woken) and self._suspect is not None and remote.kind in ("state", "handoff"):
                    # No earlier poll tells how long the file has said so (a restart, `once`): ask now.
                    remote = await self._confirm(self._fingerprint)
                    snapshot = await self._snapshot_of(remote)
        except TimeoutError:
            return self._failed(at, started, HostTimeout(f"poll timed out after {self.timeout:g}s"))
        except HostError as exc:
            return self._failed(at, started, exc)
        except PueueParseError as exc:
            self._forget()
            error = str(exc) if isinstance(exc, TooManyGroups) else f"bad pueue JSON: {exc}"
            return PollResult(self.host.name, at, time.monotonic() - started, error=error, reason="parse")
        return PollResult(
            host=self.host.name,
            at=at,
            duration=time.monotonic() - started,
            snapshot=snapshot,
            state_file_bytes=remote.state_file_bytes,
            source=remote.kind,
            wire_bytes=remote.wire_bytes,
            daemon_up=remote.daemon_up,
            probes=_probes(remote),
            file_done=None if self._file_counts is None else self._file_counts[0],
            file_tasks=None if self._file_counts is None else self._file_counts[1],
            dropped=self._dropped,
        )

    async def wait_for_change(self, seconds: float) -> bool | None:
        """A long poll: wait on the host, up to ``seconds``, for its state file to change (or for pueue's
        callback to touch the wake marker: ``watcher/remote/session.py``). True when it changed, False when
        the time ran out without a change; None when there is nothing to wait on (no poll session on this
        transport, or no state known yet): the caller sleeps instead. A change found here is fetched by the
        next :meth:`poll`; one the file does not show (the marker) makes that poll ask pueue itself."""
        known = self._fingerprint if self._snapshot is not None else ""
        wait = int(seconds)
        if not known or wait < 1:
            return None
        if self.host.transport == "local" and self._local_state:
            changed, self._local_mark = await _watch_file(self._local_state, wait, self._local_mark)
            self._woken = self._woken or changed
            return changed
        answer = await self._ask(known, wait=wait, timeout=self.timeout + wait)
        if answer is None:
            return None
        self._wake_mark = answer.wake or self._wake_mark
        changed = answer.kind != "unchanged"
        self._woken = self._woken or changed
        return changed

    @property
    def fingerprint(self) -> str | None:
        """The state file's fingerprint at the last successful poll ("size mtime inode"), if known."""
        return self._fingerprint or None

    async def close(self) -> None:
        await self.transport.close()

    async def _fetch(self) -> RemoteState:
        # Without a snapshot in memory an "unchanged" answer would be useless, so ask for the content.
        known = self._fingerprint if self._snapshot is not None else ""
        remote = None
        if known:
            # The usual case, nothing changed: ask the host's long-lived session, if the transport keeps one.
            answer = await self._ask(known)
            remote = answer if answer is not None and answer.kind == "unchanged" else None
        if remote is None:
            remote = await self._run(poll_argv(self.host, known))
        woken, self._woken = self._woken, False
        if remote.kind == "unchanged" and woken:
            # A long poll woke on pueue's marker, not on the file: a change pueue did not save.
            return await self._confirm(known)
        if remote.kind == "unchanged" and self._due_for_confirmation():
            # The file has not changed for a poll, and what it says may be stale: ask pueue itself.
            return await self._confirm(known)
        return remote

    async def _confirm(self, known: str) -> RemoteState:
        """``pueue status``, standing in for the state file whose fingerprint it carries."""
        remote = await self._run(poll_argv(self.host, known, confirm=True))
        if remote.kind != "status":
            return remote
        self.confirmations += 1
        log.info("poll.confirmed", host=self.host.name, why=self._suspect)
        return dataclasses.replace(remote, kind="confirm")

    async def _run(self, argv: list[str]) -> RemoteState:
        result = await self.transport.run(argv, timeout=self.timeout, limit=self.max_answer_bytes,
                                          head=check_head)  # fmt: skip
        # Only an answer from this machine may name a file for the watcher to open (a handoff).
        local = self.host.transport == "local"
        return read_output(
            result.stdout, result.stderr, result.exit_status, local=local, pueue=self.host.pueue
        )

    def _due_for_confirmation(self) -> bool:
        if self._suspect is None or self._snapshot is None:
            return False
        self._confirm_wait -= 1
        return self._confirm_wait <= 0

    async def _ask(self, known: str, *, wait: int = 0, timeout: float | None = None) -> RemoteState | None:
        """One request to the host's poll session (a long poll when ``wait`` seconds are given)."""
        self._requests += 1
        # Random per request: an answer left from an earlier (timed-out) request, or text on the host that is
        # not the script's, cannot pass for the end of this one.
        token = secrets.token_hex(8)
        request = session_request(self.host, known, token, wait, self._wake_mark if wait else "")
        if request is None:
            return None
        until = SESSION_END + token.encode() + b"\n"
        answer = await self.transport.ask(session_argv(), request, until, timeout=timeout or self.timeout)
        return None if answer is None else read_output(answer, b"", 0, pueue=self.host.pueue)

    async def _snapshot_of(self, remote: RemoteState) -> Snapshot:
        if remote.kind == "unchanged" and self._snapshot is not None:
            return self._snapshot
        limits = (self.max_answer_bytes, self.host.groups, self.max_groups, self.max_group_name, self.keep)
        args = (remote, *limits)
        if remote.kind == "handoff" or remote.encoding != "none" or len(remote.body) > _THREAD_THRESHOLD:
            digest = await asyncio.to_thread(_digest, *args)
        else:
            digest = _digest(*args)
        snapshot = digest.snapshot
        if remote.kind in ("state", "handoff"):
            self._file_counts = digest.file_counts
        elif remote.kind != "confirm" or remote.fingerprint != self._fingerprint:
            self._file_counts = None  # `pueue status` alone, or a file that changed since it was read
        if remote.kind == "confirm" and remote.fingerprint == self._fingerprint:
            # The same file, still: confirm it again only after twice as many polls (a daemon that keeps a
            # suspect state for real, whatever the reason, costs a bounded number of `pueue status`).
            self._confirm_backoff = min(self._confirm_backoff * 2, 32)
        else:
            self._confirm_backoff = 1
        self._confirm_wait = self._confirm_backoff
        self._suspect = digest.suspect
        self._dropped = digest.dropped
        # A state-file read can be skipped next time, and so can a confirmation: its fingerprint is that of
        # the file it stood in for. Plain `pueue status` output (no daemon, or no file) has none.
        self._fingerprint = remote.fingerprint if remote.kind in ("state", "handoff", "confirm") else ""
        if remote.kind == "handoff":
            self._local_state = bytes(remote.body).decode(errors="replace")
        self._snapshot = snapshot
        return snapshot

    @classmethod
    def configured(cls, host: HostConfig, transport: Transport, watcher: WatcherSection) -> HostPoller:
        """A poller with the ``[watcher]`` section's timeout and per-host limits."""
        return cls(host, transport, watcher.host_timeout, max_groups=watcher.max_groups,
                   max_group_name=watcher.max_group_name,
                   max_answer_bytes=watcher.max_answer_bytes)  # fmt: skip

    def _failed(self, at: datetime, started: float, exc: HostError) -> PollResult:
        self._forget()
        return PollResult(self.host.name, at, time.monotonic() - started, error=str(exc), reason=exc.reason,
                          permanent=not exc.temporary)  # fmt: skip

    def _forget(self) -> None:
        self._fingerprint = ""
        self._snapshot = None
        self._file_counts = None


#: How often the local transport's long poll looks at the state file (seconds): one stat call each time.
LOCAL_WAKE_CHECK = 0.25


async def _watch_file(
    path: str, seconds: float, mark: tuple[int, int, int] | bool | None
) -> tuple[bool, tuple[int, int, int] | None]:
    """The local transport's long poll: (True, marker) as soon as the state file at ``path`` is another file
    or was written, or the wake marker beside it (``watcher/remote/session.py``) differs from ``mark`` (as
    the last wait left it; False: not seen yet, then as it is now); (False, marker) after ``seconds``. A stat
    call four times a second, on the event loop (microseconds each)."""
    marker = os.path.join(os.path.dirname(path), WAKE_MARKER)

    def stat(name: str) -> tuple[int, int, int] | None:
        try:
            st = os.stat(name)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    before = stat(path)
    known = stat(marker) if mark is False else mark
    deadline = time.monotonic() + seconds
    while True:
        now = stat(marker)
        if stat(path) != before or now != known:
            return True, now
        left = deadline - time.monotonic()
        if left <= 0:
            return False, now
        await asyncio.sleep(min(LOCAL_WAKE_CHECK, left))
