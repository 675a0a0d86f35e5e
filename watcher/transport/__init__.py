"""Transports: how a command reaches a host (``ssh`` over asyncssh, or ``local``)."""

from __future__ import annotations

from watcher.config import HostConfig, WatcherSection
from watcher.transport.base import CommandResult, Transport

__all__ = ["CommandResult", "Transport", "open_transport"]


def open_transport(host: HostConfig, watcher: WatcherSection) -> Transport:
    """The transport for ``host``. The SSH one is imported lazily: only it imports asyncssh."""
    if host.transport == "local":
        from watcher.transport.local import LocalTransport

        return LocalTransport()
    from watcher.transport.ssh import SSHTransport

    return SSHTransport(host, connect_timeout=watcher.connect_timeout, keepalive=watcher.keepalive_interval)
