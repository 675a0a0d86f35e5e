"""``KEY_file = "/path"`` for every secret key: the secret is read from that file, not written in the TOML.

A Slack URL or a ClickHouse password in the configuration file ends up in backups and in version control.
Every secret field (a ``SecretStr``: ``password``, ``passphrase``, an alert sink's ``url`` and ``secret``)
also accepts ``<field>_file``, the path of a file that holds it (one line; a trailing newline is dropped),
as Docker and systemd hand secrets over. Environment variables and systemd credentials still win over both.
The file must be a regular file (no link followed), at most 64 KiB; a problem names the key and the path.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from watcher.config_errors import models_in

SUFFIX = "_file"
MAX_SECRET_BYTES = 64 << 10


def with_secret_files(data: Mapping[str, Any], root: type[BaseModel]) -> tuple[dict[str, Any], list[str]]:
    """``data`` with each ``<secret>_file`` replaced by the secret it names; the problems, a line each."""
    found: list[str] = []
    return _resolve(data, [root], "", found), found


def _resolve(
    data: Mapping[str, Any], models: list[type[BaseModel]], where: str, found: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        fields = [m.model_fields[key] for m in models if key in m.model_fields]
        base = key[: -len(SUFFIX)] if key.endswith(SUFFIX) else None
        if not fields and base is not None and any(_secret(m, base) for m in models):
            if base in data:
                found.append(f"{path}: give {base} or {key}, not both")
            elif not isinstance(value, str):
                found.append(f"{path}: expected the path of a file")
            else:
                secret = _read(path, value, found)
                if secret is not None:
                    out[base] = secret
            continue
        inner = [m for f in fields for m in models_in(f.annotation)]
        if isinstance(value, Mapping) and inner:
            out[key] = _resolve(value, inner, path, found)
        elif isinstance(value, list) and inner:
            out[key] = [
                _resolve(item, inner, f"{path}[{i}]", found) if isinstance(item, Mapping) else item
                for i, item in enumerate(value)
            ]
        else:
            out[key] = value
    return out


def _secret(model: type[BaseModel], name: str) -> bool:
    field = model.model_fields.get(name)
    return field is not None and SecretStr in (field.annotation, *getattr(field.annotation, "__args__", ()))


def _read(where: str, name: str, found: list[str]) -> str | None:
    path = Path(name).expanduser()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        found.append(f"{where}: {path}: {exc.strerror or exc}")
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            found.append(f"{where}: {path}: not a regular file")
            return None
        raw = os.read(fd, MAX_SECRET_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_SECRET_BYTES:
        found.append(f"{where}: {path}: over {MAX_SECRET_BYTES >> 10} KiB")
        return None
    try:
        return raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        found.append(f"{where}: {path}: not UTF-8 text")
        return None
