"""The project's exceptions. Foreign exceptions are translated at the boundary that sees them.

::

    WatcherError                      every error this project raises on purpose
    ├── ConfigError                   the configuration file or environment is invalid (exit 2)
    ├── PueueParseError               pueue's JSON is malformed, truncated or of an unknown shape
    ├── StoreError                    the state database is foreign, corrupt, newer, or the disk is full
    │   └── StorePathUnsafe           a link, another user's file, or a directory anyone may write to
    ├── ProbeParseError               (watcher/probes/proc.py) a /proc or df text could not be read
    └── HostError                     one host could not be read; the others carry on
        ├── HostUnreachable           TCP connect failed, DNS failed, the connection dropped (temporary)
        ├── HostTimeout               connect or command took longer than allowed (temporary)
        ├── HostKeyRejected           the host key is unknown or changed (permanent: needs an operator)
        ├── AuthenticationFailed      the server refused our key (permanent)
        ├── PueueUnavailable          pueue is missing, or its daemon is down (temporary)
        └── BadPollOutput             the remote side answered something we cannot read

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
