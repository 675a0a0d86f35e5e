"""A tiny, dependency-free ``sd_notify(3)`` client, for ``Type=notify`` and ``WatchdogSec=`` under systemd.

``NOTIFY_SOCKET`` names an AF_UNIX datagram socket: a filesystem path, or an abstract one spelled
``@name``. Without it (not started by systemd) every call is a no-op. Nothing here ever raises: a failed
send is logged once and then ignored, because a notification must never take the daemon down.
"""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger("watcher.sdnotify")

_failed_once = False


def _address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # an abstract socket
    if value.startswith("/"):
        return value
    return None  # vsock:… and other families are not supported


def notify(message: str) -> bool:
    """Send ``message`` (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``…); False if not sent."""
    global _failed_once
    address = _address(os.environ.get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except Exception as exc:  # never raise: a notification must not take the daemon down
        if not _failed_once:
            _failed_once = True
            log.warning("sdnotify.failed", message=message, error=str(exc))
        return False
    return True


def watchdog_interval() -> float | None:
    """systemd's watchdog timeout in seconds (``WATCHDOG_USEC``), or None when no watchdog applies to us.

    Ping at least every half of it, as ``sd_watchdog_enabled(3)`` recommends.
    """
    try:
        pid = os.environ.get("WATCHDOG_PID")
        if pid and int(pid) != os.getpid():
            return None
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None
