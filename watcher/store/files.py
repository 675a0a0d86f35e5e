"""The state database's files on disk: this user's alone, and never reached through a symbolic link.

The state names every host, group and task label, and its outbox holds the alerts not yet sent. SQLite opens
``state.db``, ``state.db-wal`` and ``state.db-shm`` by name and follows links, so a link planted at any of
them would have the daemon write wherever it points; a file another user owns could feed the daemon made-up
phases and events; a file others may read gives the fleet away. So, before SQLite opens anything:

- the directory must not be writable by every user: anyone could plant a link there between this check and
  SQLite's open (the directories the store creates are 0700);
- each of the three files that exists must be a regular file owned by this user: a link, or a file of
  another user, is refused, not followed or taken over. That includes root: run the commands that open the
  store as the daemon's user (``sudo -u pueue-watcher pueue-watcher history``);
- a missing database is created 0600, whatever the umask. SQLite gives -wal and -shm the database's mode.
  The read-only commands never create one (``create=False``): an admin's ``history`` against their own
  configuration would otherwise make an empty store in their home and report "no phases";
- an existing file that its group or others may read or write is narrowed to 0600, and the log says so.
  :func:`narrow` runs after the database has been inspected, so that a file refused as foreign keeps its mode.
"""

from __future__ import annotations

import errno
import os
import stat

import structlog

from watcher.errors import StoreMissing, StorePathUnsafe

log = structlog.get_logger("watcher.store")

COMPANIONS = ("-wal", "-shm")


def make_parents(directory: str) -> None:
    """Create ``directory`` and its missing parents, each 0o700 (``os.makedirs`` applies the mode to the
    last one only)."""
    missing: list[str] = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for each in reversed(missing):
        os.mkdir(each, 0o700)


def check(path: str, *, create: bool = True) -> bool:
    """Refuse an unsafe directory or file (StorePathUnsafe); create a missing database 0600, or raise
    StoreMissing without ``create``. True when the database existed before."""
    directory = os.path.dirname(path)
    if not create and not os.path.lexists(path):
        raise StoreMissing(path)
    if os.stat(directory).st_mode & stat.S_IWOTH:
        raise StorePathUnsafe(
            f"{path}: its directory is writable by every user, who could swap the state for a link; "
            "refusing to keep the state there"
        )
    existed = False
    for name in (path, *(path + suffix for suffix in COMPANIONS)):
        try:
            found = os.lstat(name)
        except FileNotFoundError:
            continue
        refuse_unless_ours(name, found)
        existed = existed or name == path
    if not existed:
        if not create:  # removed since the first look
            raise StoreMissing(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the umask may have taken bits from the owner too
        finally:
            os.close(fd)
    return existed


def narrow(path: str) -> None:
    """Set each existing file of the database that its group or others may use to 0600, through a
    descriptor opened without following links (so a link swapped in since :func:`check` is refused)."""
    for name in (path, *(path + suffix for suffix in COMPANIONS)):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                refuse_unless_ours(name, os.lstat(name))
            raise
        try:
            found = os.fstat(fd)
            refuse_unless_ours(name, found)
            if found.st_mode & 0o077:
                os.fchmod(fd, 0o600)
                log.warning("store.permissions_narrowed", path=name, was=f"{stat.S_IMODE(found.st_mode):04o}")
        finally:
            os.close(fd)


def refuse_unless_ours(name: str, found: os.stat_result) -> None:
    if stat.S_ISLNK(found.st_mode):
        raise StorePathUnsafe(f"{name}: a symbolic link; refusing to follow it (name the file itself)")
    if not stat.S_ISREG(found.st_mode):
        raise StorePathUnsafe(f"{name}: not a regular file; refusing to touch it")
    if found.st_uid != os.geteuid():
        raise StorePathUnsafe(
            f"{name}: owned by uid {found.st_uid}, not by this user (uid {os.geteuid()}); refusing to touch "
            "it: run as its owner"
        )
