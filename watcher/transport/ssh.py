"""The ``ssh`` transport, over asyncssh. This is the only module that imports asyncssh.

One connection per host is opened on first use and reused by every poll; a poll that finds it dropped opens
it again once. Host keys are verified against ``known_hosts`` (asyncssh's default, ``~/.ssh/known_hosts``,
when none is configured); only the explicit value ``"none"`` turns verification off (a ``~/.ssh/config`` that
would turn it off is refused). ``~/.ssh/config`` is otherwise honoured by asyncssh, ProxyJump included, except
what would hand a host something of the operator's: agent forwarding, X11 forwarding, SendEnv/SetEnv and a
pty are always off. SHA-1 algorithms are offered only to a host whose ``~/.ssh/config`` entry names them.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncssh

from watcher.config import HostConfig
from watcher.errors import (
    AuthenticationFailed,
    BadPollOutput,
    HostError,
    HostKeyRejected,
    HostTimeout,
    HostUnreachable,
)
from watcher.transport.base import CommandResult, HeadCheck, read_stderr, read_stream

# A connection that dies under a command: asyncssh reports a lost or closed connection as a DisconnectError
# (ConnectionLost), but a reset that hits one of its writes surfaces as the socket's own OSError
# (ConnectionResetError, BrokenPipeError).
SESSION_ANSWER_BYTES = 1 << 20  # a session answer is a header of a few KB (probes included)
_LOST = (asyncssh.ChannelOpenError, asyncssh.DisconnectError, OSError)


class SSHTransport:
    def __init__(self, host: HostConfig, *, connect_timeout: float, keepalive: float) -> None:
        self._host = host
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        # Tunnels live on one connection: (connection, target) → the local listener.
        self._forwards: dict[tuple[str, int], tuple[asyncssh.SSHClientConnection, asyncssh.SSHListener]] = {}
        self._forward_lock = asyncio.Lock()
        # The long-lived session of `ask`, and the connection it runs on.
        self._session: tuple[asyncssh.SSHClientConnection, asyncssh.SSHClientProcess[bytes]] | None = None
        self._session_lock = asyncio.Lock()

    @property
    def where(self) -> str:
        port = f":{self._host.port}" if self._host.port else ""
        return f"{self._host.destination}{port}"

    async def run(
        self, argv: Sequence[str], *, timeout: float, limit: int | None = None, head: HeadCheck | None = None
    ) -> CommandResult:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        reused = self._conn is not None and not self._conn.is_closed()
        conn = await self._connection(timeout)
        try:
            return await self._run(conn, argv, deadline - loop.time(), limit, head)
        except _LOST as exc:
            await self._drop()
            if not reused:
                raise HostUnreachable(f"{self.where}: connection lost: {_reason(exc)}") from exc
        # The cached connection had died since the last poll (a reboot, a dropped link): one fresh try.
        conn = await self._connection(max(deadline - loop.time(), 0.001))
        try:
            return await self._run(conn, argv, deadline - loop.time(), limit, head)
        except _LOST as exc:
            await self._drop()
            raise HostUnreachable(f"{self.where}: connection lost: {_reason(exc)}") from exc

    async def ask(self, argv: Sequence[str], request: bytes, until: bytes, *, timeout: float) -> bytes | None:
        """One request to the session process, opened on the current connection when there is none. Only an
        existing connection is used: connecting (and reconnecting) is left to :meth:`run`."""
        async with self._session_lock:
            conn = self._conn
            if conn is None or conn.is_closed():
                self._close_session()
                return None
            try:
                async with asyncio.timeout(timeout):
                    if self._session is None or self._session[0] is not conn:
                        self._close_session()
                        process = await conn.create_process(
                            shlex.join(argv), encoding=None, stderr=asyncssh.DEVNULL
                        )
                        self._session = (conn, process)
                    process = self._session[1]
                    process.stdin.write(request)
                    return await _read_until(process.stdout, until)
            except TimeoutError:
                self._close_session()
                reason = f"no answer from the poll session within {timeout:.3g}s"
                raise HostTimeout(f"{self.where}: {reason}") from None
            except (asyncssh.Error, asyncio.IncompleteReadError, BrokenPipeError, OSError):
                self._close_session()
                return None
            except (asyncio.CancelledError, HostError):
                self._close_session()
                raise

    def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session[1].close()

    async def forward(self, host: str, port: int, *, timeout: float) -> tuple[str, int]:
        """A local port forwarded to ``host:port`` through this host (``ssh -L``), kept for later calls and
        opened again when the connection was replaced. Callers ask before each use (the port of a former
        connection is closed here, and another local process could bind it next)."""
        conn = await self._connection(timeout)
        async with self._forward_lock:  # concurrent queries after a reconnect open one listener, not several
            known = self._forwards.get((host, port))
            if known is not None and known[0] is conn:
                return "127.0.0.1", known[1].get_port()
            if known is not None:
                del self._forwards[(host, port)]
                known[1].close()
            try:
                listener = await conn.forward_local_port("127.0.0.1", 0, host, port)
            except (asyncssh.Error, OSError) as exc:
                reason = f"cannot open a tunnel to {host}:{port}: {_reason(exc)}"
                raise HostUnreachable(f"{self.where}: {reason}") from exc
            self._forwards[(host, port)] = (conn, listener)
            return "127.0.0.1", listener.get_port()

    async def close(self) -> None:
        for _, listener in self._forwards.values():
            listener.close()
        self._forwards.clear()
        self._close_session()
        await self._drop()

    async def _run(
        self,
        conn: asyncssh.SSHClientConnection,
        argv: Sequence[str],
        timeout: float,
        limit: int | None,
        head: HeadCheck | None,
    ) -> CommandResult:
        if timeout <= 0:
            raise HostTimeout(f"{self.where}: no time left to run the command")
        process = await conn.create_process(shlex.join(argv), encoding=None, stdin=asyncssh.DEVNULL)
        try:
            async with asyncio.timeout(timeout):
                stdout, stderr = await asyncio.gather(
                    read_stream(process.stdout, limit, head), read_stderr(process.stderr)
                )
                done = await process.wait(check=False)
        except TimeoutError:
            with contextlib.suppress(Exception):
                process.send_signal("KILL")
            process.close()
            raise HostTimeout(f"{self.where}: command timed out after {timeout:.3g}s") from None
        except (asyncio.CancelledError, HostError):  # HostError: an answer past read_stream's limit
            process.close()
            raise
        status = done.exit_status if done.exit_status is not None else 255
        return CommandResult(exit_status=status, stdout=stdout, stderr=stderr)

    async def _connection(self, timeout: float) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            self._conn = None
            try:
                async with asyncio.timeout(min(timeout, self._connect_timeout)):
                    options = await self._connect_options()
                    self._conn = await asyncssh.connect(self._host.destination, **options)
            except HostError:
                raise
            except Exception as exc:
                raise _translate(exc, self.where) from exc
            return self._conn

    async def _connect_options(self) -> dict[str, Any]:
        """The options of ``asyncssh.connect``: ours, checked against what ~/.ssh/config resolves to."""
        options = self._options()
        # config=(): read ~/.ssh/config as connect() does (the constructor's own default reads none).
        resolved = await asyncssh.SSHClientConnectionOptions.construct(
            config=(), host=self._host.destination, **options
        )
        self._refuse_unverified(resolved)
        options.update(_modern_algorithms(resolved.config))
        return options

    def _refuse_unverified(self, resolved: Any) -> None:
        """Only this host's explicit ``known_hosts = "none"`` may turn host key verification off. asyncssh
        also turns it off for ``UserKnownHostsFile none`` in ~/.ssh/config (where OpenSSH still refuses an
        unknown key), and would then accept any key, a man in the middle's included."""
        if self._host.known_hosts is None and resolved.known_hosts is None:
            raise HostKeyRejected(
                f"{self.where}: host key verification failed: ~/.ssh/config turns it off "
                "(UserKnownHostsFile none); set known_hosts"
            )

    def _options(self) -> dict[str, Any]:
        host = self._host
        options: dict[str, Any] = {
            "connect_timeout": self._connect_timeout,
            "login_timeout": self._connect_timeout,
            "keepalive_interval": self._keepalive,
            "keepalive_count_max": 3,
            # A watched host is not trusted, whatever ~/.ssh/config says (asyncssh follows its ForwardAgent,
            # ForwardX11Trusted, SendEnv, SetEnv and RequestTTY): a forwarded agent would let that host log
            # into every other host as the operator, and the watcher's environment holds its secrets. The
            # agent may still sign this host's own login: a signature is bound to this one session.
            "agent_forwarding": False,
            "x11_forwarding": False,
            "send_env": None,
            "env": None,
            "request_pty": False,  # a pty would also turn the binary payload's \n into \r\n
        }
        if host.compression == "ssh":
            # Compression by the SSH layer (zlib, after login) instead of on the host.
            options["compression_algs"] = ["zlib@openssh.com", "zlib"]
        if host.port is not None:
            options["port"] = host.port
        if host.user is not None:
            options["username"] = host.user
        if host.identity_file is not None:
            options["client_keys"] = [str(Path(host.identity_file).expanduser())]
        if host.passphrase is not None:
            options["passphrase"] = host.passphrase.get_secret_value()
        if host.known_hosts is not None:
            # Only the explicit word "none" disables verification; a missing file means no key is trusted.
            known = host.known_hosts
            options["known_hosts"] = None if known.lower() == "none" else str(Path(known).expanduser())
        return options

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await conn.wait_closed()


# What asyncssh would otherwise offer: SHA-1 key exchange, RSA signatures with SHA-1 (`ssh-rsa`, for the host
# key and for this client's own login) and hmac-sha1. asyncssh's "-" prefix removes the matches from its
# default list. A ~/.ssh/config that names its own list for a host (an old server that needs one of them)
# keeps its choice, as OpenSSH would: that is the operator's decision for that host.
_WITHOUT_SHA1 = {
    "KexAlgorithms": ("kex_algs", "-*-sha1"),
    "MACs": ("mac_algs", "-hmac-sha1*"),
    "HostKeyAlgorithms": ("server_host_key_algs", "-ssh-rsa,ssh-rsa-cert-v01@openssh.com"),
    "CASignatureAlgorithms": ("signature_algs", "-ssh-rsa"),
}


def _modern_algorithms(config: Any) -> dict[str, str]:
    """The algorithm options for a host, unless its ~/.ssh/config entry chooses them itself."""
    return {option: value for key, (option, value) in _WITHOUT_SHA1.items() if not config.get(key)}


async def _read_until(
    stream: asyncssh.SSHReader[bytes], until: bytes, limit: int = SESSION_ANSWER_BYTES
) -> bytes:
    """The session's answer, up to and including ``until``: a header of a few KB, so a host that sends more
    than ``limit`` without the marker is refused (the session is then closed) rather than buffered."""
    buffer = bytearray()
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(buffer), None)
        start = max(len(buffer) - len(until), 0)
        buffer += chunk
        end = buffer.find(until, start)
        if end >= 0:
            return bytes(buffer[: end + len(until)])
        if len(buffer) > limit:
            raise BadPollOutput(f"the poll session's answer is larger than {limit >> 10} KiB")


def _translate(exc: BaseException, where: str) -> HostError:
    """Map asyncssh's and the socket layer's exceptions to the project's, with a one-line reason."""
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return HostKeyRejected(f"{where}: host key verification failed: {_reason(exc)}")
    if isinstance(exc, asyncssh.PermissionDenied):
        return AuthenticationFailed(f"{where}: authentication failed: {_reason(exc)}")
    if isinstance(exc, TimeoutError):
        return HostTimeout(f"{where}: connect timed out")
    if isinstance(exc, socket.gaierror):
        return HostUnreachable(f"{where}: cannot resolve host name: {exc.strerror or exc}")
    if isinstance(exc, ConnectionRefusedError):
        return HostUnreachable(f"{where}: connection refused")
    if isinstance(exc, OSError):
        return HostUnreachable(f"{where}: {exc.strerror or exc}")
    if isinstance(exc, asyncssh.Error):
        return HostUnreachable(f"{where}: ssh: {_reason(exc)}")
    if isinstance(exc, ValueError):
        # asyncssh raises ValueError for unreadable keys or known_hosts files.
        return AuthenticationFailed(f"{where}: ssh configuration: {exc}")
    return HostUnreachable(f"{where}: {type(exc).__name__}: {exc}")


def _reason(exc: BaseException) -> str:
    strerror = exc.strerror if isinstance(exc, OSError) else None
    reason = getattr(exc, "reason", None) or strerror or str(exc) or type(exc).__name__
    return " ".join(str(reason).split())
