"""Configuration: a TOML file, overridden by ``PUEUE_WATCHER__SECTION__KEY`` environment variables, and by
systemd credentials of the same names (``watcher/credentials.py``) below those.

The file is found at ``-c/--config``, else ``$PUEUE_WATCHER_CONFIG``, else ``./config.toml``, else
``~/.config/pueue-watcher/config.toml`` (``$XDG_CONFIG_HOME``), else ``/etc/pueue-watcher/config.toml``.
Every problem is reported as one line naming the key (``hosts[1].port: …``, config_errors.py), and the CLI
exits 2. A secret key also takes ``<key>_file``, a file that holds it (secret_files.py).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from checks.clickhouse.identifiers import identifier
from checks.config import AnyCheckConfig
from watcher.alerts.config import AlertConfig
from watcher.config_errors import problems, unknown_variables
from watcher.credentials import CredentialsSource, credentials_directory
from watcher.errors import ConfigError
from watcher.secret_files import with_secret_files
from watcher.shard import parse_shard, select
from watcher.units import Duration, Size

ENV_CONFIG = "PUEUE_WATCHER_CONFIG"
DEFAULT_PATHS = (Path("config.toml"), Path("/etc/pueue-watcher/config.toml"))


def default_paths() -> list[Path]:
    """Where a configuration is looked for, in order: ``./config.toml``, the user's
    ``$XDG_CONFIG_HOME/pueue-watcher/config.toml`` (what the user unit reads), ``/etc/pueue-watcher/``."""
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [DEFAULT_PATHS[0], config_home / "pueue-watcher" / "config.toml", DEFAULT_PATHS[1]]


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,63}$")


def _plain_text(value: str, what: str) -> str:
    if not value or any(ch in value for ch in "\0\n\r"):
        raise ValueError(f"{what} must be a non-empty single line")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WatcherSection(_Section):
    poll_interval: Duration = Field(300.0, description="Seconds between polls of a host ('30s', '5m', '1h').")
    state_path: str = Field("~/.local/state/pueue-watcher/state.db", description="The SQLite state database.")
    host_timeout: Duration = Field(60.0, description="Upper bound of one host's poll, connect included.")
    connect_timeout: Duration = Field(15.0, description="Upper bound of an SSH connect and login.")
    keepalive_interval: Duration = Field(30.0, description="SSH keepalive interval.")
    max_concurrency: int = Field(32, ge=1, le=1024, description="Hosts polled at the same time.")
    long_poll: bool = Field(
        True,
        description="Between polls, wait on the host for its state file to change (over SSH, on the poll "
        "session): a change is seen within a second or two instead of at the next poll.",
    )
    fast_interval: Duration | Literal[0] = Field(
        5.0,
        description="Adaptive polling: while a group is in its last wave (no more tasks left than it runs at "
        "once), poll its host this often, so that a completion is seen within seconds. 0 turns it off.",
    )
    alert_on_first_sight: bool = Field(
        False, description="On the first run, report groups that are already complete as completions."
    )
    grace_period: Duration = Field(10.0, description="On SIGTERM, how long in-flight polls may finish.")
    down_after: int = Field(3, ge=1, description="Consecutive failed polls before host.down is reported.")
    max_groups: int = Field(
        200,
        ge=1,
        le=100_000,
        description="Groups watched per host at most: the groups already tracked first, then by name. A host "
        "with more is reported (host.groups_dropped, pueue_watcher_groups_dropped): each group costs memory, "
        "a row per poll and about 17 series per scrape.",
    )
    max_group_name: int = Field(
        256, ge=16, le=4096, description="A group whose name has more characters than this is not watched."
    )
    max_answer_bytes: Size = Field(
        1 << 30,
        description="The most read of one host's answer, and the most its state file may decompress to "
        "('256MB'); a larger one fails the poll. Far above a real pueue state (53,000 tasks are 76 MB): it "
        "bounds what a broken or hostile host can make the watcher hold.",
    )
    max_phase_alerts_per_hour: int = Field(
        120,
        ge=1,
        description="phase.completed alerts per host and hour at most; beyond it, the phases of one poll are "
        "still recorded, checked and gated, and their alerts are folded into one phase.flood alert.",
    )
    shard: str | None = Field(
        None,
        description="'i/n': watch only the hosts that hash to shard i of n, so that n watchers split the "
        "fleet with no overlap and no gap (--shard overrides it).",
    )

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str | None) -> str | None:
        if value is not None:
            parse_shard(value)
        return value


class HygieneSection(_Section):
    max_state_bytes: Size = Field(
        10_000_000,
        description="Clean a host's pueue when its state file grows beyond this ('10MB'). pueued's clean "
        "costs about the square of the task count (README, 'State hygiene'): cleaning early keeps it short.",
    )
    clean: Literal["successful", "all", "off"] = Field(
        "successful",
        description="What `pueue clean` removes from complete groups: Done/Success tasks only (-s), "
        "every Done task, or nothing (cleaning off).",
    )
    dry_run: bool = Field(False, description="Only report what would be cleaned.")
    cooldown: Duration = Field(600.0, description="Least time between two cleans of one host.")
    timeout: Duration = Field(
        600.0,
        description="Budget of one clean of a host, apart from watcher.host_timeout: the clean runs beside "
        "the host's polls, and when it runs out the clean is recorded as partial.",
    )


class MetricsSection(_Section):
    listen: str = Field("127.0.0.1:9925", description="host:port of the metrics endpoint; '' disables it.")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value == "":
            return value
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port")
        return value


class HostConfig(_Section):
    name: str = Field(description="The label used in output, metrics and alerts.")
    transport: Literal["ssh", "local"] = "ssh"
    address: str | None = Field(None, description="The ssh destination (an ~/.ssh/config alias works).")
    port: int | None = Field(None, ge=1, le=65535)
    user: str | None = None
    identity_file: str | None = None
    passphrase: SecretStr | None = Field(None, description="Passphrase of identity_file, if any.")
    known_hosts: str | None = Field(
        None, description="known_hosts file; host keys are always verified unless this is 'none'."
    )
    pueue: str = Field("pueue", description="The pueue client on that host.")
    pueue_dir: str | None = Field(
        None,
        description="pueue's directory (state.json). Default: as pueue decides it, from its configuration "
        "(shared.pueue_directory), else ~/.local/share/pueue (~/Library/Application Support/pueue on macOS).",
    )
    pueue_config: str | None = Field(
        None,
        description="pueue's configuration file on that host, passed as `-c` to every pueue call and read "
        "for pueue's directories. Default: pueue's own lookup ($PUEUE_CONFIG_PATH, "
        "~/.config/pueue/pueue.yml).",
    )
    pueue_profile: str | None = Field(
        None, description="The profile of pueue's configuration to use (`--profile`), if any."
    )
    groups: list[str] = Field(default_factory=lambda: ["*"], description="Globs of the groups to watch.")
    compression: Literal["gzip", "zstd", "ssh", "none"] | None = Field(
        None,
        description="How the state travels: compressed on the host by zstd (gzip where the host has no "
        "zstd) or gzip, by the SSH layer ('ssh'), or not at all. Default: zstd over ssh, none for the "
        "local transport (bench/transfer.py: zstd moves a 74 MB state as 7.6 MB for 0.16 s of host CPU).",
    )
    probes: bool = Field(
        True, description="Read load, memory, swap and disk at every poll (same round trip)."
    )
    read_state_file: bool = Field(
        True, description="Read state.json directly (cheap) instead of asking the pueue daemon."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a host name (letters, digits, . _ @ : + -; at most 64)")
        return value

    @field_validator("address", "user", "identity_file", "known_hosts", "pueue", "pueue_dir", "pueue_config",
                     "pueue_profile")  # fmt: skip
    @classmethod
    def _single_line(cls, value: str | None) -> str | None:
        return None if value is None else _plain_text(value, "this value")

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one group glob ('*' watches all)")
        return [_plain_text(glob, "a group glob") for glob in value]

    @property
    def destination(self) -> str:
        return self.address or self.name

    @property
    def host_key_unchecked(self) -> bool:
        """``known_hosts = "none"``: this host's key is not verified (any man in the middle is accepted)."""
        return self.transport == "ssh" and (self.known_hosts or "").lower() == "none"

    @property
    def remote_compression(self) -> str:
        """What the remote script compresses with ("ssh" compresses in the transport instead)."""
        chosen = self.compression or ("none" if self.transport == "local" else "zstd")
        return "none" if chosen == "ssh" else chosen


class ClickHouseConfig(_Section):
    name: str = Field(description="Referred to by checks.")
    host: str = "127.0.0.1"
    port: int = Field(9000, ge=1, le=65535, description="The native protocol port.")
    user: str = "default"
    password: SecretStr = Field(SecretStr(""), description="Better given by the environment.")
    database: str = "default"
    via_host: str | None = Field(
        None, description="Reach ClickHouse through an SSH tunnel over this watched host's connection."
    )
    max_execution_time: Duration = Field(60.0, description="ClickHouse's own limit on each check query.")
    max_threads: int = Field(2, ge=1, description="So that a check never starves the production server.")
    connect_timeout: Duration = 10.0

    @field_validator("database")
    @classmethod
    def _database(cls, value: str) -> str:
        return identifier(value)  # what a check's `database.table` may name, no more


class ProbesConfig(_Section):
    """Host health, read at every poll. A breach is reported when it lasts ``breach_polls`` polls."""

    max_load_per_cpu: float = Field(0.9, description="load1 above this × CPUs is a breach.")
    max_swap_pages_per_second: float = Field(0.0, description="Swap-in + swap-out pages per second (vmstat).")
    min_memory_available_ratio: float = Field(0.1, description="MemAvailable / MemTotal below this.")
    min_disk_free_bytes: int = Field(1_000_000_000, description="Free bytes where pueue keeps its state.")
    breach_polls: int = Field(3, ge=1, description="Consecutive polls a breach must last to be reported.")


class GateConfig(_Section):
    """When ``after`` completes on ``host`` and its checks pass, ``pueue start -g start``."""

    host: str
    after: str
    start: str
    on_fail: Literal["hold", "start"] = Field(
        "hold", description="hold: keep `start` paused (pause it if needed) unless every check passed."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PUEUE_WATCHER__",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    watcher: WatcherSection = Field(default_factory=WatcherSection)  # type: ignore[arg-type]
    hygiene: HygieneSection = Field(default_factory=HygieneSection)  # type: ignore[arg-type]
    metrics: MetricsSection = Field(default_factory=MetricsSection)  # type: ignore[arg-type]
    hosts: list[HostConfig] = Field(default_factory=list)
    clickhouse: list[ClickHouseConfig] = Field(default_factory=list)
    checks: list[AnyCheckConfig] = Field(default_factory=list)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)  # type: ignore[arg-type]
    gates: list[GateConfig] = Field(default_factory=list)
    alerts: list[AlertConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Settings:
        """Names are unique, and everything that refers to a host or a ClickHouse names one that exists."""
        hosts = _unique("host", [h.name for h in self.hosts])
        databases = _unique("clickhouse", [c.name for c in self.clickhouse])
        _unique("check", [c.name for c in self.checks])
        _unique("alert sink", [a.name for a in self.alerts])
        for ch in self.clickhouse:
            if ch.via_host is not None and ch.via_host not in hosts:
                raise ValueError(f"clickhouse {ch.name!r}: via_host {ch.via_host!r} is not a configured host")
        for check in self.checks:
            target = getattr(check, "clickhouse", None)
            if isinstance(target, str) and target not in databases:
                raise ValueError(f"check {check.name!r}: clickhouse {target!r} is not a [[clickhouse]] entry")
        for gate in self.gates:
            if gate.host not in hosts:
                raise ValueError(f"gate after {gate.after!r}: host {gate.host!r} is not a configured host")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Priority, highest first: explicit arguments, the environment, systemd credentials, the TOML file.
        directory = credentials_directory()
        credentials = () if directory is None else (CredentialsSource(settings_cls, directory),)
        return (init_settings, env_settings, *credentials, _FileSource(settings_cls, _FILE_DATA.get()))


def _unique(what: str, names: list[str]) -> set[str]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} name {name!r} is used twice")
        seen.add(name)
    return seen


_FILE_DATA: ContextVar[Mapping[str, Any]] = ContextVar("file_data", default=MappingProxyType({}))


class _FileSource(PydanticBaseSettingsSource):
    """The already-parsed TOML document, as the lowest-priority settings source."""

    def __init__(self, settings_cls: type[BaseSettings], data: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = dict(data)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where the configuration is read from (the first existing candidate, or the explicit path)."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get(ENV_CONFIG):
        return Path(env)
    for candidate in default_paths():
        if candidate.exists():
            return candidate
    return DEFAULT_PATHS[0]


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read and validate the configuration; raise :class:`ConfigError` listing every problem."""
    source = find_config(path)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if path or os.environ.get(ENV_CONFIG):
            raise ConfigError(str(source), ["file not found"]) from None
        tried = ", ".join(str(p) for p in default_paths())
        raise ConfigError(
            "config", [f"no configuration file found (tried {tried}); pass -c FILE or set {ENV_CONFIG}"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(source), [f"cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(source), [f"not valid TOML: {exc}"]) from None
    return settings_from_mapping(data, str(source))


def settings_from_mapping(data: Mapping[str, Any], source: str = "<config>") -> Settings:
    resolved, found = with_secret_files(data, Settings)
    found += unknown_variables(Settings)
    token = _FILE_DATA.set(resolved)
    try:
        settings = Settings()
    except ValidationError as exc:
        # A key whose <key>_file could not be read is reported there, not again as missing.
        unread = {f"{line.split(':', 1)[0].removesuffix('_file')}: required" for line in found}
        described = [line for line in problems(exc.errors(), Settings) if line not in unread]
        raise ConfigError(source, [*found, *described]) from None
    except SettingsError as exc:  # a variable or credential whose value is not the JSON its key needs
        raise ConfigError(source, [*found, _settings_problem(exc)]) from None
    finally:
        _FILE_DATA.reset(token)
    if found:
        raise ConfigError(source, found)
    return settings


def _settings_problem(exc: SettingsError) -> str:
    """``clickhouse: the value of PUEUE_WATCHER__CLICKHOUSE in the environment is not valid JSON``."""
    found = re.search(r'field "(\w+)" from source "(\w+)"', str(exc))
    if found is None:
        return " ".join(str(exc).split())
    field, origin = found.groups()
    where = "a credential" if origin == CredentialsSource.__name__ else "the environment"
    return f"{field}: the value of PUEUE_WATCHER__{field.upper()} in {where} is not valid JSON"


def watched_hosts(settings: Settings, shard: str | None = None) -> list[HostConfig]:
    """The hosts this watcher polls: all of them, or those of its shard (``shard`` overrides the file)."""
    chosen = shard or settings.watcher.shard
    if chosen is None:
        return list(settings.hosts)
    index, count = parse_shard(chosen)
    return select(settings.hosts, [h.name for h in settings.hosts], index, count)
