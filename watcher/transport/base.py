"""The transport seam: run one command on a host and collect its output.

Commands are argument vectors. The SSH transport quotes them with :func:`shlex.join` for the remote login
shell; the local transport executes them directly. Nothing else in the project builds a command line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from watcher.errors import BadPollOutput

CHUNK = 1 << 20
# The most a command may print, and the most a payload may decompress to (watcher/remote/): far above
# any real pueue state (53,000 tasks are 76 MB), far below what would exhaust the watcher's memory when a
# host, compromised or broken, sends without end or sends a compression bomb.
MAX_ANSWER_BYTES = 1 << 30
# What is kept of a command's stderr: its head (pueue's error, a few hundred bytes) and its tail (the poll
# script's "pueue-watcher-rc N" line). stderr carries no payload, so a host that floods it costs only the
# time to drain it (the command's timeout bounds that), never memory.
MAX_STDERR_BYTES = 64 << 10
STDERR_TAIL_BYTES = 1 << 10

#: A look at the beginning of an answer while it arrives: given what has come so far, it returns True once
#: it has seen enough (False: not yet), or raises a HostError to stop reading there. A host whose answer is
#: already wrong in its first kilobytes (a header without end) then costs those kilobytes, not the answer.
HeadCheck = Callable[[bytearray], bool]


@dataclass(frozen=True, slots=True)
class CommandResult:
    exit_status: int
    # A bytearray grown in place: a 76 MB answer is never held twice (see read_stream).
    stdout: bytes | bytearray
    stderr: bytes | bytearray


class Transport(Protocol):
    """Runs commands on one host. Implementations keep their connection between calls."""

    async def run(
        self, argv: Sequence[str], *, timeout: float, limit: int | None = None, head: HeadCheck | None = None
    ) -> CommandResult:
        """Run ``argv`` and return its result; raise a :class:`~watcher.errors.HostError` when the host
        cannot be reached or the command outlives ``timeout`` seconds. ``limit`` and ``head`` bound what is
        read of its stdout (:func:`read_stream`)."""
        ...

    async def ask(self, argv: Sequence[str], request: bytes, until: bytes, *, timeout: float) -> bytes | None:
        """Send ``request`` to a long-lived process started with ``argv`` (started on first use and kept
        open) and return what it prints up to and including ``until``. None when this transport keeps no
        such process, or the process was lost (the caller then runs its one-shot command, which reconnects);
        a :class:`~watcher.errors.HostTimeout` when no answer comes within ``timeout`` seconds."""
        ...

    async def forward(self, host: str, port: int, *, timeout: float) -> tuple[str, int]:
        """An address on this machine that reaches ``host:port`` as seen from the watched host (an SSH
        tunnel over the existing connection; the same address for the local transport)."""
        ...

    async def close(self) -> None:
        """Release the connection, if any. Safe to call twice."""
        ...


def size_text(size: int) -> str:
    """A byte count as people read it in a message: "1 GiB", "32 MiB", "1.5 KiB", "700 bytes"."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):.3g} {unit}"
    return f"{size} bytes"


class _ByteStream(Protocol):
    async def read(self, n: int = -1, /) -> bytes: ...


async def read_stream(
    stream: _ByteStream, limit: int | None = None, head: HeadCheck | None = None
) -> bytearray:
    """Read to EOF into one growing buffer. Joining a list of chunks at the end would need the whole answer
    twice in memory; a bytearray grows in place (glibc moves large blocks with mremap, without copying).
    More than ``limit`` bytes (default :data:`MAX_ANSWER_BYTES`) is a :class:`BadPollOutput`; ``head`` may
    stop the reading earlier (:data:`HeadCheck`)."""
    limit = MAX_ANSWER_BYTES if limit is None else limit
    buffer = bytearray()
    while chunk := await stream.read(CHUNK):
        buffer += chunk
        if head is not None and head(buffer):
            head = None
        if len(buffer) > limit:
            raise BadPollOutput(f"the host's answer is larger than {size_text(limit)}")
    return buffer


async def read_stderr(
    stream: _ByteStream, keep: int = MAX_STDERR_BYTES, tail: int = STDERR_TAIL_BYTES
) -> bytearray:
    """Read to EOF, keeping the first ``keep`` bytes and the last ``tail``; what lies between is drained and
    dropped (the writer is never blocked on a full pipe, and the watcher never holds more than the cap). A
    cut is marked by a line ``[… N bytes dropped …]``."""
    head = bytearray()
    end = bytearray()
    dropped = 0
    while chunk := await stream.read(CHUNK):
        room = keep - len(head)
        if room > 0:
            head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            continue
        kept = chunk[-tail:] if tail else b""
        dropped += len(chunk) - len(kept)
        end += kept
        if len(end) > tail:
            dropped += len(end) - tail
            del end[: len(end) - tail]
    if dropped:
        head += f"\n[… {dropped} bytes dropped …]\n".encode()
    return head + end
