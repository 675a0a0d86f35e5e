"""Local files a configuration names, checked before anything connects: each host's ``identity_file`` and
``known_hosts``, and the ``pueue`` client of a local host when it is given as a path.

Why before: asyncssh reports a missing key or known_hosts file as a bare ``No such file or directory``, which
reads as if the host were wrong; and ``config validate`` could otherwise call a configuration ok that cannot
work. ``config validate`` and ``health`` print these problems, and the SSH transport refuses to connect with
the same words (``watcher/transport/ssh.py``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from watcher.config import HostConfig


@dataclass(frozen=True, slots=True)
class Problem:
    """One local file of one host that cannot be used, as one line: ``identity_file PATH: no such file``."""

    host: str
    message: str


def file_problem(path: str | Path, *, executable: bool = False) -> str | None:
    """Why ``path`` cannot be read (or run), in a few words; None when it can."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if not os.access(path, os.X_OK if executable else os.R_OK):
        return "not executable" if executable else "not readable by this user"
    return None


def host_problems(host: HostConfig) -> list[Problem]:
    """The local files of ``host`` that are missing or unusable."""
    found: list[Problem] = []

    def check(role: str, given: str, *, executable: bool = False) -> None:
        path = Path(given).expanduser()
        why = file_problem(path, executable=executable)
        if why is not None:
            found.append(Problem(host.name, f"{role} {path}: {why}"))

    if host.transport == "ssh":
        if host.identity_file is not None:
            check("identity_file", host.identity_file)
        if host.known_hosts is not None and not host.host_key_unchecked:
            check("known_hosts", host.known_hosts)
    elif host.pueue.startswith(("/", "~/")):
        # A bare name is looked up on the PATH of the process that polls, which may not be this shell's.
        check("pueue", host.pueue, executable=True)
    return found


def problems(hosts: Sequence[HostConfig]) -> list[Problem]:
    """Every host's problems, in the order of the configuration."""
    return [problem for host in hosts for problem in host_problems(host)]
