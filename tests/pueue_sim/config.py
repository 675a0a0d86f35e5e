"""`pueue.yml` discovery and the few settings the simulator needs, as `pueue_lib::Settings` does it.

Discovery (`Settings::read`, Linux):

1. `--config`/`-c PATH`, else the `PUEUE_CONFIG_PATH` environment variable: only that file is read,
   and a missing file is an error ("I/O error at path ... while opening config file").
2. Otherwise `$XDG_CONFIG_HOME/pueue/pueue.yml` (`~/.config/pueue/pueue.yml` when unset), then
   `./pueue.yml`. If none exists the defaults are used and `found` is False: the client then refuses
   to run, the daemon writes a default config (to `--config` or the default location).

Paths (`Shared`): `pueue_directory` defaults to `$XDG_DATA_HOME/pueue` or `~/.local/share/pueue`;
the socket is `shared.unix_socket_path`, else `<runtime_directory>/pueue_<user>.socket`, where the
runtime directory is `shared.runtime_directory`, else `$XDG_RUNTIME_DIR`, else `pueue_directory`;
the pid file is `shared.pid_path`, else `<runtime directory>/pueue.pid` (`Shared::pid_path` in
pueue_lib/src/settings.rs, 3.4.1 and 4.0.4 alike), the secret `<pueue_directory>/shared_secret`.
A leading `~` is expanded everywhere.

Only a small YAML subset is parsed: nested `key: value` mappings with scalars.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration failure, as a chain of messages (outermost first) for `errors.render`."""

    def __init__(self, chain: list[str], location: str = "pueue/src/bin/pueue.rs:56") -> None:
        super().__init__(chain[0])
        self.chain = chain
        self.location = location


def username() -> str:
    """`whoami::username()`: the login name of the real user id."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER", "unknown")


def home() -> Path:
    return Path(os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir)


def expand_home(value: str) -> Path:
    if value == "~" or value.startswith("~/"):
        return home() / value[2:]
    return Path(value)


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var, "")
    if value and os.path.isabs(value):
        return Path(value)
    return home() / fallback


def default_config_directory() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "pueue"


def default_pueue_directory() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "pueue"


# --------------------------------------------------------------------------------------------
# YAML subset
# --------------------------------------------------------------------------------------------


def _scalar(text: str) -> Any:
    text = text.strip()
    if not text or text in ("~", "null", "Null", "NULL"):
        return None
    if text[0] in "\"'" and text[-1] == text[0] and len(text) >= 2:
        inner = text[1:-1]
        if text[0] == '"':
            inner = inner.encode("utf-8").decode("unicode_escape")
        return inner
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if text == "{}":
        return {}
    try:
        return int(text)
    except ValueError:
        return text


def _strip_comment(line: str) -> str:
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def parse_yaml(text: str) -> dict[str, Any]:
    """Nested mappings of scalars, which is all `pueue.yml` and `pueue_aliases.yml` need."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for raw in text.splitlines():
        line = _strip_comment(raw).rstrip()
        if not line.strip() or line.strip() in ("---", "..."):
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, sep, value = line.strip().partition(":")
        if not sep:
            continue
        key = _scalar(key)
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if value.strip() == "":
            child: dict[str, Any] = {}
            parent[str(key)] = child
            stack.append((indent, child))
        else:
            parent[str(key)] = _scalar(value)
    return root


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass
class Settings:
    pueue_directory: Path = field(default_factory=default_pueue_directory)
    runtime_directory: Path | None = None
    unix_socket_path_: Path | None = None
    pid_path_: Path | None = None
    shared_secret_path_: Path | None = None
    alias_file: Path | None = None
    compress_state_file: bool = False
    config_path: Path | None = None

    def runtime_dir(self) -> Path:
        if self.runtime_directory is not None:
            return self.runtime_directory
        xdg = os.environ.get("XDG_RUNTIME_DIR", "")
        if xdg and os.path.isabs(xdg):
            return Path(xdg)
        return self.pueue_directory

    def socket_path(self) -> Path:
        return self.unix_socket_path_ or self.runtime_dir() / f"pueue_{username()}.socket"

    def pid_path(self) -> Path:
        return self.pid_path_ or self.runtime_dir() / "pueue.pid"

    def shared_secret_path(self) -> Path:
        return self.shared_secret_path_ or self.pueue_directory / "shared_secret"

    def aliases(self) -> dict[str, str]:
        """`pueue_aliases.yml` (`shared.alias_file`, else next to the default config)."""
        path = self.alias_file or default_config_directory() / "pueue_aliases.yml"
        try:
            data = parse_yaml(path.read_text())
        except OSError:
            return {}
        return {str(k): str(v) for k, v in data.items() if v is not None}


def _path(value: Any) -> Path | None:
    return None if value in (None, "") else expand_home(str(value))


def settings_from_yaml(text: str, flavor: str, path: Path | None) -> Settings:
    data = parse_yaml(text)
    shared = data.get("shared") or {}
    daemon = data.get("daemon") or {}
    settings = Settings(config_path=path)
    if shared.get("pueue_directory"):
        settings.pueue_directory = expand_home(str(shared["pueue_directory"]))
    settings.runtime_directory = _path(shared.get("runtime_directory"))
    settings.unix_socket_path_ = _path(shared.get("unix_socket_path"))
    settings.pid_path_ = _path(shared.get("pid_path"))
    settings.shared_secret_path_ = _path(shared.get("shared_secret_path"))
    settings.alias_file = _path(shared.get("alias_file"))
    # `daemon.compress_state_file` exists since 4.0; 3.x ignores the unknown key.
    settings.compress_state_file = flavor == "v4" and daemon.get("compress_state_file") is True
    return settings


def io_error_text(err: OSError) -> str:
    """Rust's `io::Error` Display: `No such file or directory (os error 2)`."""
    return f"{os.strerror(err.errno or 0)} (os error {err.errno})"


def rust_debug_path(path: Path | str) -> str:
    """`{:?}` of a `PathBuf`: a double-quoted string with Rust escapes."""
    text = str(path).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def read_settings(explicit: str | None, flavor: str) -> tuple[Settings, bool]:
    """`Settings::read`: returns `(settings, found)`; raises ConfigError for an unreadable file."""
    chosen = explicit or os.environ.get("PUEUE_CONFIG_PATH") or None
    if chosen is not None:
        path = Path(chosen)
        try:
            text = path.read_text()
        except OSError as err:
            raise ConfigError(
                [
                    "Failed to read configuration.",
                    f"I/O error at path {rust_debug_path(path)} while opening config file:\n"
                    f"{io_error_text(err)}",
                ]
            ) from err
        return settings_from_yaml(text, flavor, path), True
    for directory in (default_config_directory(), Path.cwd()):
        path = directory / "pueue.yml"
        if path.is_file():
            return settings_from_yaml(path.read_text(), flavor, path), True
    return Settings(), False


def default_config_text(settings: Settings, flavor: str) -> str:
    """Roughly what `Settings::save` writes for a fresh install (serde_yaml of the defaults)."""
    lines = [
        "client:",
        "  restart_in_place: false",
        "  read_local_logs: true",
        "  show_confirmation_questions: false",
        "  show_expanded_aliases: false",
        "  dark_mode: false",
        "  max_status_lines: null",
        "  status_time_format: '%H:%M:%S'",
        '  status_datetime_format: "%Y-%m-%d\\n%H:%M:%S"',
        "daemon:",
        "  pause_group_on_failure: false",
        "  pause_all_on_failure: false",
        "  callback: null",
        "  env_vars: {}",
        "  callback_log_lines: 10",
    ]
    if flavor == "v4":
        lines.append("  shell_command: null")
        lines.append("  compress_state_file: false")
    lines += [
        "shared:",
        f"  pueue_directory: {settings.pueue_directory}",
        "  runtime_directory: null",
        "  alias_file: null",
        "  use_unix_socket: true",
        "  unix_socket_path: null",
        "  pid_path: null",
        "  host: 127.0.0.1",
        "  port: '6924'",
        f"  daemon_cert: {settings.pueue_directory / 'certs' / 'daemon.cert'}",
        f"  daemon_key: {settings.pueue_directory / 'certs' / 'daemon.key'}",
        f"  shared_secret_path: {settings.pueue_directory / 'shared_secret'}",
        "profiles: {}",
    ]
    return "\n".join(lines) + "\n"


def save_default_config(settings: Settings, explicit: str | None, flavor: str) -> Path:
    path = Path(explicit) if explicit else default_config_directory() / "pueue.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(default_config_text(settings, flavor))
    return path
