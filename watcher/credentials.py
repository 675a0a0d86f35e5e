"""Settings from systemd credentials: the file ``$CREDENTIALS_DIRECTORY/PUEUE_WATCHER__KEY`` holds what the
environment variable ``PUEUE_WATCHER__KEY`` would hold, with the same names, nesting and JSON.

Why not the environment: a variable is inherited by every child the daemon starts, and a unit's
``EnvironmentFile=`` must be readable by whoever manages the unit. ``LoadCredential=`` has systemd (root) read
the file, which the daemon's own user need not be able to read, and hand the daemon a copy on a private,
read-only, unswappable mount that lives as long as the service. The environment still works, and wins over
a credential that names the same key (``config.py``: arguments, environment, credentials, the TOML file).

A directory loaded as ``LoadCredential=PUEUE_WATCHER_:/etc/pueue-watcher/credentials`` names each of its
files ``PUEUE_WATCHER_`` + ``_`` + the file's name, so a file ``clickhouse`` there arrives as
``PUEUE_WATCHER__clickhouse``; names match without regard to case, as variables do.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from pydantic_settings import BaseSettings, EnvSettingsSource

from watcher.errors import ConfigError

ENV_DIRECTORY = "CREDENTIALS_DIRECTORY"
PREFIX = "PUEUE_WATCHER__"
#: systemd's own bound on all the credentials of a unit together.
MAX_BYTES = 1 << 20


def credentials_directory() -> Path | None:
    """``$CREDENTIALS_DIRECTORY`` when it is set (systemd sets it for a unit with credentials)."""
    value = os.environ.get(ENV_DIRECTORY, "")
    return Path(value) if value else None


class CredentialsSource(EnvSettingsSource):
    """An environment read from the files of ``directory`` whose names start with ``PUEUE_WATCHER__``."""

    def __init__(self, settings_cls: type[BaseSettings], directory: Path) -> None:
        self.directory = directory  # read by _load_env_vars, which the base __init__ calls
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        found = read_credentials(self.directory)
        return found if self.case_sensitive else {name.lower(): value for name, value in found.items()}


def read_credentials(directory: Path) -> dict[str, str]:
    """``{file name: text}`` of the ``PUEUE_WATCHER__*`` files in ``directory``; one trailing newline is
    dropped (``echo`` adds one). Raises ConfigError for a symlink, a non-regular file, more than MAX_BYTES or
    text that is not UTF-8: a credential that cannot be read must stop the start, not be skipped."""
    where = f"${ENV_DIRECTORY} ({directory})"
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as exc:
        raise ConfigError(where, [f"cannot list it: {exc.strerror or exc}"]) from None
    found: dict[str, str] = {}
    for entry in entries:
        if not entry.name.upper().startswith(PREFIX):
            continue  # another program's credential
        found[entry.name] = _read_one(Path(entry.path), where)
    return found


def _read_one(path: Path, where: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        reason = "a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        raise ConfigError(where, [f"{path.name}: cannot read it: {reason}"]) from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(where, [f"{path.name}: not a regular file"])
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ConfigError(where, [f"{path.name}: larger than {MAX_BYTES} bytes"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(where, [f"{path.name}: not UTF-8 text"]) from None
    return text.removesuffix("\n")
