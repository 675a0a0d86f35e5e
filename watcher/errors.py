"""The project's exceptions. Foreign exceptions are translated at the boundary that sees them.

::

    WatcherError                      every error this project raises on purpose
    ├── ConfigError                   the configuration file or environment is invalid (exit 2)
    ├── PueueParseError               pueue's JSON is malformed, truncated or of an unknown shape
    │   └── TooManyGroups             a document lists far more groups than the watcher keeps
    ├── ProbeParseError               a /proc or df text could not be read (also a ValueError)
    ├── StoreError                    the state database is foreign, corrupt, newer, or the disk is full
    │   ├── StorePathUnsafe           a link, another user's file, or a directory anyone may write to
    │   ├── StoreMissing              no database at the path, and a read-only command creates none
    │   └── StoreInUse                another process holds the store's lock
    ├── HostError                     one host could not be read; the others carry on
    │   ├── HostUnreachable           TCP connect failed, DNS failed, the connection dropped (temporary)
    │   ├── HostTimeout               connect or command took longer than allowed (temporary)
    │   ├── HostKeyRejected           the host key is unknown or changed (permanent: needs an operator)
    │   ├── AuthenticationFailed      the server refused our key (permanent)
    │   ├── PueueUnavailable          pueue is missing, or its daemon is down (temporary)
    │   └── BadPollOutput             the remote side answered something we cannot read
    ├── DeliveryError                 an alert sink could not deliver (temporary, or refused for good)
    └── MetricsError                  the metrics endpoint cannot start

The two errors of the plug-in package ``checks/`` live there and are not WatcherErrors, because ``checks/``
imports nothing of ``watcher/`` but ``watcher.units`` (``tests/test_import_graph.py``):
``checks.registry.UnknownCheckKind`` (a ValueError: no check of that kind) and
``checks.clickhouse.client.CheckQueryError`` (a check's query failed). Both become a check's ``error``
result, never a crash.

Each error says what the caller should do with it: ``temporary`` errors are retried at the next poll
(with backoff: ``watcher/schedule.py``); ``permanent`` ones are reported and retried only slowly, since they
need a human.
"""

from __future__ import annotations


class WatcherError(Exception):
    """Base class of every error raised on purpose by pueue-watcher."""


class ConfigError(WatcherError):
    """The configuration is invalid. ``problems`` holds one line per wrong key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class PueueParseError(WatcherError):
    """Pueue's JSON could not be read. The message names the task or the byte offset."""


class TooManyGroups(PueueParseError):
    """A document lists far more groups than the watcher keeps of a host (poll/select.py): it is not read
    further, so that a host cannot make the watcher build (and hold the GIL for) hundreds of thousands."""


class ProbeParseError(WatcherError, ValueError):
    """One section of the host probes' block (``watcher/probes/proc.py``) could not be read; the message
    names the section and the text."""


class HostError(WatcherError):
    """One host could not be polled. ``reason`` is a short machine-readable label for metrics."""

    reason = "error"
    temporary = True

    def __init__(self, message: str) -> None:
        super().__init__(message)


class HostUnreachable(HostError):
    reason = "unreachable"


class HostTimeout(HostError):
    reason = "timeout"


class HostKeyRejected(HostError):
    reason = "host_key"
    temporary = False


class AuthenticationFailed(HostError):
    reason = "auth"
    temporary = False


class PueueUnavailable(HostError):
    reason = "pueue"


class BadPollOutput(HostError):
    reason = "parse"


class StoreError(WatcherError):
    """The state database cannot be used: a foreign or corrupt file, a newer schema, a full disk.

    ``permanent`` errors (foreign, corrupt, newer) need an operator; the daemon exits 2 without touching the
    file. Temporary ones (disk full, locked) fail the current write, which is retried at the next cycle; at
    start, the daemon waits for them to clear."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class StorePathUnsafe(StoreError):
    """A file of the state database is a symbolic link, not a regular file or another user's, or its directory
    is writable by every user (``watcher/store/files.py``). Always permanent: an operator must look."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class StoreMissing(StoreError):
    """There is no database at the path, and the caller (a read-only command) must not create one."""

    def __init__(self, path: str) -> None:
        super().__init__(f"no state store at {path}", permanent=True)
        self.path = path


class StoreInUse(StoreError):
    """Another process (a daemon, a ``once``) holds the store's lock (``watcher/store/lock.py``). Permanent:
    starting again will not help while it runs."""

    def __init__(self, path: str, pid: int | None) -> None:
        holder = "another process" if pid is None else f"pid {pid}"
        super().__init__(f"state store {path} is in use by {holder}", permanent=True)
        self.pid = pid


class DeliveryError(WatcherError):
    """A sink could not deliver. ``temporary``: try again later (after ``retry_after`` seconds when the
    target said so); otherwise the target refused the request, and sending it again will not help.

    The message names the sink (``webhook 'ops'``), never its URL or secret.
    """

    def __init__(self, message: str, *, temporary: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.retry_after = retry_after


class MetricsError(WatcherError):
    """The metrics endpoint cannot start: a malformed ``listen``, an address in use, a refused bind."""
