"""structlog setup: JSON lines when the stream is not a terminal (journald, files), readable otherwise."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure(stream: TextIO | None = None, level: str = "info") -> None:
    """Send log events to ``stream`` (stdout by default). Commands whose stdout is their output
    (``status --json``) pass stderr."""
    stream = stream or sys.stdout
    renderer: structlog.typing.Processor
    if stream.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # asyncssh logs every connection at INFO through the standard library; keep only its warnings.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
