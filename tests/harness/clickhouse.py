"""A real clickhouse-server on loopback for tests and benchmarks, in a directory of its own.

The server is Debian's 18.16, an old release (see shared/docs/REAL-PARTS.md): a minimal ``<yandex>``
configuration, logs in the directory, the timezone UTC, and users with empty passwords reachable only from
127.0.0.1: ``default`` (read-write), ``reader`` (profile readonly = 1) and ``settable_reader`` (readonly = 2,
the profile a monitoring user is usually given). :meth:`ClickHouseServer.start` returns once the HTTP
``/ping`` answers: about 2 s on a cold machine, 0.3 s here.
"""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.services import free_port, http_ok, kill, require_binary, terminate, wait_until_ready

SERVER_BINARIES = ("/usr/sbin/clickhouse-server", "clickhouse-server")

_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{root}/server.log</log>
        <errorlog>{root}/error.log</errorlog>
        <size>100M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>{port}</tcp_port>
    <http_port>{http_port}</http_port>
    <path>{root}/data/</path>
    <tmp_path>{root}/tmp/</tmp_path>
    <user_files_path>{root}/user_files/</user_files_path>
    <format_schema_path>{root}/format_schemas/</format_schema_path>
    <users_config>{root}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <max_concurrent_queries>50</max_concurrent_queries>
</yandex>
"""

_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
        </default>
        <readonly>
            <readonly>1</readonly>
        </readonly>
        <readonly_settable>
            <readonly>2</readonly>
        </readonly_settable>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <reader>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>readonly</profile>
            <quota>default</quota>
        </reader>
        <settable_reader>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>readonly_settable</profile>
            <quota>default</quota>
        </settable_reader>
    </users>
    <quotas>
        <default></default>
    </quotas>
</yandex>
"""


@dataclass
class ClickHouseServer:
    """One clickhouse-server process; ``port`` is the native protocol, ``http_port`` the HTTP interface."""

    root: Path
    port: int = 0
    http_port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.http_port = self.http_port or free_port()
        while self.http_port == self.port:
            self.http_port = free_port()

    @property
    def config(self) -> Path:
        return self.root / "config.xml"

    def start(self, timeout: float = 30.0) -> ClickHouseServer:
        """Start the server (keeping the data of an earlier run in ``root``) and wait until it answers."""
        binary = require_binary(*SERVER_BINARIES)
        for sub in ("data", "tmp", "user_files", "format_schemas"):
            (self.root / sub).mkdir(exist_ok=True)
        self.config.write_text(_CONFIG.format(root=self.root, port=self.port, http_port=self.http_port))
        (self.root / "users.xml").write_text(_USERS)
        with (self.root / "stderr.log").open("ab") as stderr:
            self.proc = subprocess.Popen(
                [binary, f"--config-file={self.config}"],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        ping = f"{self.url}/ping"
        wait_until_ready(self.proc, lambda: http_ok(ping), timeout, f"clickhouse-server on port {self.port}",
                         self.log_tail)  # fmt: skip
        return self

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-query, as after a crash."""
        kill(self.proc)
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def execute(self, *statements: str) -> str:
        """Run each statement over HTTP (DDL, ``INSERT … VALUES (…)``, OPTIMIZE) and return the last output.

        HTTP, not the native protocol: the driver waits for data blocks after an ``INSERT … VALUES`` written
        inline, so seeding SQL is sent as text, the same text the tests give to chdb.
        """
        output = ""
        for statement in statements:
            request = urllib.request.Request(self.url + "/", data=statement.encode(), method="POST")  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310 - loopback http
                    output = response.read().decode()
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace").split("Stack trace")[0].strip()
                raise RuntimeError(f"ClickHouse refused {statement[:80]!r}: {detail}") from None
        return output

    def log_tail(self, size: int = 2000) -> str:
        parts = []
        for name in ("error.log", "stderr.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-size:])
        return "\n".join(parts) or "(no log)"
