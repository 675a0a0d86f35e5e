"""One daemon per state store: an exclusive ``flock`` on ``state.db.lock``, held while the store is open.

Two daemons on one store would both clean the hosts' queues and both start gated groups, and their commits
would interleave in the same outbox. SQLite's own locking serialises their transactions but does not stop
the second daemon, so ``run`` and ``once`` take this lock before touching the database, and a second one is
refused in one line that names the holder's pid. The read-only commands (``history``, ``status``) never take
it: reading beside a running daemon is what they are for.

The lock file follows the rules of the database's files (``files.py``): created 0600, never opened through a
symbolic link, refused when another user owns it. The kernel drops a ``flock`` when its holder dies, so a
daemon killed with -9 leaves no stale lock, only the file with its pid, which the next daemon overwrites. The
file is never removed: unlinking it on release would let a daemon that opened the old file before the unlink
and one that creates a new file both hold "the" lock.
"""

from __future__ import annotations

import errno
import fcntl
import os

from watcher.errors import StoreError, StoreInUse
from watcher.store import files

SUFFIX = ".lock"


def hold(path: str) -> int:
    """Lock the store at ``path`` (an absolute path) for this process: the lock file's descriptor, to keep
    open until :func:`release`. StoreInUse when another process holds it; StoreError for a file that
    cannot be opened, a link or another user's file."""
    name = path + SUFFIX
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            files.refuse_unless_ours(name, os.lstat(name))
        raise StoreError(f"{name}: cannot open the lock file: {exc.strerror}", permanent=True) from exc
    try:
        found = os.fstat(fd)
        files.refuse_unless_ours(name, found)
        if found.st_mode & 0o077:
            os.fchmod(fd, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreInUse(path, _pid(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise StoreError(f"{name}: cannot lock the state store: {exc.strerror}", permanent=True) from exc
    except BaseException:
        os.close(fd)
        raise
    return fd


def release(fd: int) -> None:
    """Closing the descriptor drops the lock; the file and its pid stay (see the module's docstring)."""
    os.close(fd)


def _pid(fd: int) -> int | None:
    """The holder's pid as it wrote it; None while it has not yet written it (or wrote nonsense)."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
