"""A scripted transport for fast unit tests of the poller. Each scenario that uses it also runs against a real
sshd in tests/test_status_e2e.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from watcher.errors import HostError
from watcher.transport.base import CommandResult


@dataclass
class FakeTransport:
    answers: list[CommandResult | HostError]
    calls: list[list[str]] = field(default_factory=list)
    closed: bool = False

    async def run(self, argv: Sequence[str], *, timeout: float) -> CommandResult:
        self.calls.append(list(argv))
        answer = self.answers.pop(0)
        if isinstance(answer, HostError):
            raise answer
        return answer

    async def ask(self, argv: Sequence[str], request: bytes, until: bytes, *, timeout: float) -> bytes | None:
        return None  # a local command is a cheap fork: no long-lived session

    async def forward(self, host: str, port: int, *, timeout: float) -> tuple[str, int]:
        return host, port

    async def close(self) -> None:
        self.closed = True
