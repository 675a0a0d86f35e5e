"""The poll session's request tokens: random per request, never a counter a host could predict."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from tests.harness.fake_transport import FakeTransport
from tests.test_poller import HOST, UNCHANGED, state_answer
from watcher.poll.poller import HostPoller
from watcher.transport.base import CommandResult


class _RecordingSession(FakeTransport):
    """A fake transport with a poll session that records each request's end marker and never answers."""

    def __init__(self, answers: list[CommandResult]) -> None:
        super().__init__(answers)
        self.markers: list[bytes] = []

    async def ask(self, argv: Sequence[str], request: bytes, until: bytes, *, timeout: float) -> bytes | None:
        self.markers.append(until)
        return None


async def test_each_session_request_has_a_fresh_random_token(fixtures_dir: Path) -> None:
    """Three polls ask the session with three different 16-hex-digit tokens, none of them 1, 2, 3."""
    state = state_answer((fixtures_dir / "v4_status.json").read_bytes())
    fake = _RecordingSession([state, UNCHANGED, UNCHANGED, UNCHANGED])
    poller = HostPoller(HOST, fake, timeout=5)
    for _ in range(4):
        assert (await poller.poll()).ok
    tokens = [re.search(rb"([0-9a-f]+)\n$", marker).group(1) for marker in fake.markers]
    assert len(tokens) == 3 and len(set(tokens)) == 3
    assert all(len(token) == 16 for token in tokens)
