"""A scripted transport for fast unit tests of the poller. Each scenario that uses it also runs against a real
sshd in tests/test_status_e2e.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from watcher.errors import HostError
from watcher.transport.base import CHUNK, CommandResult, HeadCheck, read_stderr, read_stream


@dataclass(frozen=True)
class Flood:
    """An answer whose stderr is sent as a host sends it, chunk by chunk (``stderr_chunk`` repeated until
    ``stderr_bytes``, then ``stderr_end``), and read as the real transports read it: a flood of any size
    costs the test no memory."""

    stdout: bytes
    stderr_chunk: bytes
    stderr_bytes: int
    stderr_end: bytes = b""
    exit_status: int = 1
    #: After ``stdout``, this chunk repeated for ``stdout_flood_bytes`` (a header without end, say).
    stdout_flood: bytes = b""
    stdout_flood_bytes: int = 0


class _Bytes:
    """``data`` in CHUNK pieces, then ``rest``'s."""

    def __init__(self, data: bytes | bytearray, rest: _Stream | None = None) -> None:
        self._data = memoryview(bytes(data))
        self._rest = rest

    async def read(self, n: int = -1, /) -> bytes:
        if self._data:
            chunk, self._data = self._data[:CHUNK], self._data[CHUNK:]
            return bytes(chunk)
        return await self._rest.read(n) if self._rest is not None else b""


class _Stream:
    def __init__(self, chunk: bytes, total: int, end: bytes) -> None:
        self._chunk = (chunk * max(CHUNK // max(len(chunk), 1), 1))[:CHUNK]
        self._left = total
        self._end = end

    async def read(self, n: int = -1, /) -> bytes:
        if self._left > 0:
            chunk = self._chunk[: self._left]
            self._left -= len(chunk)
            return chunk
        end, self._end = self._end, b""
        return end


@dataclass
class FakeTransport:
    answers: list[CommandResult | HostError | Flood]
    calls: list[list[str]] = field(default_factory=list)
    closed: bool = False
    #: What each run returned, as the poller received it.
    results: list[CommandResult] = field(default_factory=list)

    async def run(
        self, argv: Sequence[str], *, timeout: float, limit: int | None = None, head: HeadCheck | None = None
    ) -> CommandResult:
        self.calls.append(list(argv))
        answer = self.answers.pop(0)
        if isinstance(answer, HostError):
            raise answer
        if isinstance(answer, Flood):
            flood = _Stream(answer.stdout_flood, answer.stdout_flood_bytes, b"")
            stdout = await read_stream(_Bytes(answer.stdout, flood), limit, head)
            stderr = await read_stderr(_Stream(answer.stderr_chunk, answer.stderr_bytes, answer.stderr_end))
            answer = CommandResult(answer.exit_status, stdout, stderr)
        else:  # read as the real transports read it: the same limit and the same look at its head
            stdout = await read_stream(_Bytes(answer.stdout), limit, head)
            answer = CommandResult(answer.exit_status, stdout, answer.stderr)
        self.results.append(answer)
        return answer

    async def ask(self, argv: Sequence[str], request: bytes, until: bytes, *, timeout: float) -> bytes | None:
        return None  # a local command is a cheap fork: no long-lived session

    async def forward(self, host: str, port: int, *, timeout: float) -> tuple[str, int]:
        return host, port

    async def close(self) -> None:
        self.closed = True
