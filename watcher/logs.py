"""structlog setup: JSON lines when the stream is not a terminal (journald, files), readable otherwise."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

import structlog

# Characters of one logged value. Group names and labels come from the hosts, and pueue does not bound them:
# a megabyte-long name would make a megabyte-long line, which journald (LineMax=48K) splits in pieces.
FIELD_MAX = 2000


def _clip(value: object) -> object:
    return value[:FIELD_MAX] + "…" if isinstance(value, str) and len(value) > FIELD_MAX else value


def _clip_long_values(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Cut long strings, alone or in a list (the groups of a clean); a traceback is added after this."""
    for key, value in event.items():
        event[key] = [_clip(v) for v in value] if isinstance(value, list) else _clip(value)
    return event


#: ``--log-level``: when set, it replaces each command's own level.
LEVEL_OVERRIDE: str | None = None
LEVELS = ("debug", "info", "warning", "error")


def configure(stream: TextIO | None = None, level: str = "info") -> None:
    """Send log events to ``stream`` (stdout by default). Commands whose stdout is their output
    (``status --json``) pass stderr. On a terminal the lines are readable, and coloured unless ``NO_COLOR``
    is set (https://no-color.org)."""
    stream = stream or sys.stdout
    level = LEVEL_OVERRIDE or level
    renderer: structlog.typing.Processor
    if stream.isatty():
        # repr_native_str: a group name is shown as 'a\x1b[2Jb', never let loose on the terminal.
        colors = not os.environ.get("NO_COLOR")
        renderer = structlog.dev.ConsoleRenderer(colors=colors, repr_native_str=True)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _clip_long_values,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # asyncssh logs every connection at INFO through the standard library; keep only its warnings.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
