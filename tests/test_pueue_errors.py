"""pueue's failures, as the real 4.0.4 and 3.4.1 print them (tests/fixtures/pueue/captures), as one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.remote.pueue import command_error, pueue_error

CAPTURES = Path(__file__).parent / "fixtures" / "pueue" / "captures"
STDERR = sorted(CAPTURES.glob("*/*.stderr"))


@pytest.mark.parametrize("path", STDERR, ids=[f"{p.parent.name}/{p.stem}" for p in STDERR])
def test_every_captured_error_is_one_readable_line(path: Path) -> None:
    """No ANSI codes, no `Location:` or backtrace hints (4.0.4 color-eyre): one line that keeps the cause."""
    line = pueue_error(path.read_bytes())
    assert line
    assert "\n" not in line and "\x1b" not in line
    assert "Location" not in line and "BACKTRACE" not in line and "Backtrace" not in line
    assert "error" in line.lower() or "failed" in line.lower()


def test_the_captures_are_there() -> None:
    """Both versions' captures are in the repository (a clone without ../shared has them)."""
    assert {p.parent.name for p in STDERR} == {"3.4.1", "4.0.4"}


def test_a_refusal_on_stdout_is_the_message() -> None:
    """pueue 3.4.1 prints a refused request's answer on stdout (exit 1) and nothing on stderr."""
    refusal = b'Group nope doesn\'t exists. Use one of these: ["default"]\n'
    assert command_error(refusal, b"") == 'Group nope doesn\'t exists. Use one of these: ["default"]'
    assert command_error(b"", b"Error: boom\n") == "boom"
    assert command_error(b"", b"") == "no message"
