"""The log's shape on a terminal: readable, coloured unless NO_COLOR is set; ``--log-level`` wins."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import structlog

from watcher import logs
from watcher.cli import main


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    yield
    logs.LEVEL_OVERRIDE = None
    structlog.reset_defaults()


@pytest.mark.parametrize(("no_color", "coloured"), [("", True), ("1", False)])
def test_no_color_turns_the_colours_off(
    monkeypatch: pytest.MonkeyPatch, no_color: str, coloured: bool
) -> None:
    monkeypatch.setenv("NO_COLOR", no_color)
    out = Terminal()
    logs.configure(out)
    structlog.get_logger("t").warning("phase.recorded", group="p1")
    assert ("\x1b[" in out.getvalue()) is coloured
    assert "phase.recorded" in out.getvalue()


def test_log_level_replaces_the_commands_own() -> None:
    """``--log-level error``: an info line is dropped even where the command would log at info."""
    assert main(["--log-level", "error", "config", "docs"]) == 0
    assert logs.LEVEL_OVERRIDE == "error"
    out = io.StringIO()
    logs.configure(out, level="info")
    structlog.get_logger("t").info("started")
    structlog.get_logger("t").error("crashed")
    assert "started" not in out.getvalue() and "crashed" in out.getvalue()
