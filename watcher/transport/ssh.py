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
import ipaddress
import shlex
import socket
from collections.abc import Sequence
from dataclasses import dataclass
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
from watcher.preflight import file_problem
from watcher.transport.base import CommandResult, HeadCheck, read_stderr, read_stream

# A connection that dies under a command: asyncssh reports a lost or closed connection as a DisconnectError
# (ConnectionLost), but a reset that hits one of its writes surfaces as the socket's own OSError
# (ConnectionResetError, BrokenPipeError).
SESSION_ANSWER_BYTES = 1 << 20  # a session answer is a header of a few KB (probes included)
_LOST = (asyncssh.ChannelOpenError, asyncssh.DisconnectError, OSError)



#: The ciphers offered, in order (see SSHTransport._options).
PREFERRED_CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                     "aes256-ctr", "aes192-ctr", "aes128-ctr"]  # fmt: skip


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
        # What host key verification used at the last connect: the known_hosts files, the name and port.
        self._trust = _Trust(files=(), host=host.destination, key_name=host.destination, port=22)

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
            offered = _OfferedKey()
            try:
                async with asyncio.timeout(min(timeout, self._connect_timeout)):
                    options = await self._connect_options()
                    self._conn = await asyncssh.connect(
                        self._host.destination, client_factory=lambda: offered, **options
                    )
            except HostError:
                raise
            except asyncssh.HostKeyNotVerifiable as exc:
                raise _untrusted(self._trust, offered.key, self.where, _reason(exc)) from exc
            except Exception as exc:
                raise _translate(exc, self.where) from exc
            return self._conn

    async def _connect_options(self) -> dict[str, Any]:
        """The options of ``asyncssh.connect``: ours, checked against what ~/.ssh/config resolves to."""
        self._refuse_missing_files()
        options = self._options()
        # config=(): read ~/.ssh/config as connect() does (the constructor's own default reads none).
        resolved = await asyncssh.SSHClientConnectionOptions.construct(
            config=(), host=self._host.destination, **options
        )
        self._refuse_unverified(resolved)
        options.update(_modern_algorithms(resolved.config))
        self._trust = _trust_of(resolved)
        return options

    def _refuse_missing_files(self) -> None:
        """A missing key or known_hosts file is named as such: asyncssh would say only "No such file or
        directory", which reads as if the host had said it."""
        host = self._host
        if host.identity_file is not None:
            path = Path(host.identity_file).expanduser()
            if (why := file_problem(path)) is not None:
                raise AuthenticationFailed(f"{self.where}: identity_file {path}: {why}")
        if host.known_hosts is not None and not host.host_key_unchecked:
            path = Path(host.known_hosts).expanduser()
            if (why := file_problem(path)) is not None:
                raise HostKeyRejected(f"{self.where}: known_hosts {path}: {why}")

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
            # asyncssh's own order, with AES-GCM first: one OpenSSL call per packet (AES-NI), where
            # chacha20-poly1305 takes several; a keepalive round trip costs 262 µs of the watcher's CPU
            # instead of 492 (measured against OpenSSH's sshd), and 200 hosts keep one going every 30 s.
            "encryption_algs": PREFERRED_CIPHERS,
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
            # Only the explicit word "none" disables verification (a missing file is refused before this).
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


class _OfferedKey(asyncssh.SSHClient):
    """The connection's client object: remembers the host key the server offered when known_hosts does not
    trust it (asyncssh asks its client only then), so that the error can name the key's type and
    fingerprint. It never trusts the key itself."""

    key: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.key = key
        return False


@dataclass(frozen=True, slots=True)
class _Trust:
    """What host key verification checks a connection against: the known_hosts files, the host (as
    ssh-keyscan reaches it), the name known_hosts lists it under (HostKeyAlias, else the host), the port."""

    files: tuple[str, ...]
    host: str
    key_name: str
    port: int


def _trust_of(resolved: Any) -> _Trust:
    """The known_hosts files asyncssh reads for these options: ours, else ~/.ssh/config's, else ~/.ssh's."""
    known = resolved.known_hosts
    if isinstance(known, str):
        files: tuple[str, ...] = (known,)
    elif isinstance(known, (list, tuple)) and known and all(isinstance(f, str) for f in known):
        files = tuple(known)
    else:
        files = ("~/.ssh/known_hosts",)
    paths = tuple(str(Path(f).expanduser()) for f in files)
    host = str(resolved.host)
    return _Trust(paths, host, resolved.host_key_alias or host, int(resolved.port or 22))


# ssh-keyscan's -t names of asyncssh's key algorithms.
_KEYSCAN_TYPES = {
    "ssh-ed25519": "ed25519",
    "ssh-rsa": "rsa",
    "ssh-dss": "dsa",
    "sk-ssh-ed25519@openssh.com": "ed25519-sk",
    "sk-ecdsa-sha2-nistp256@openssh.com": "ecdsa-sk",
}


def _untrusted(trust: _Trust, key: asyncssh.SSHKey | None, where: str, reason: str) -> HostKeyRejected:
    """The one-line refusal of a host key known_hosts does not trust. A *changed* key (known_hosts lists
    this host with another key) stands out, as OpenSSH's "REMOTE HOST IDENTIFICATION HAS CHANGED" does, and
    says how to remove the old key if the change is expected; an unknown key says how to add it. Both are
    commands for a human to run, quoted: the names come from the configuration and ~/.ssh/config."""
    if key is None:  # refused before the key was offered to us: revoked, or a certificate
        return HostKeyRejected(f"{where}: host key verification failed: {reason}")
    algorithm = key.algorithm.decode("ascii", "replace")
    listed = _listed(trust)
    if listed is not None:
        path, number = listed
        name = trust.key_name if trust.port == 22 else f"[{trust.key_name}]:{trust.port}"
        remove = shlex.join(["ssh-keygen", "-R", name, "-f", path])
        return HostKeyRejected(
            f"{where}: HOST KEY CHANGED, possibly a man in the middle (old key: {path} line {number}); "
            f"if the change is expected, remove it with {remove}"
        )
    kind = _KEYSCAN_TYPES.get(algorithm, "ecdsa" if algorithm.startswith("ecdsa-") else None)
    port = ["-p", str(trust.port)] if trust.port != 22 else []
    scan = shlex.join(["ssh-keyscan", *port, *(["-t", kind] if kind else []), trust.host])
    return HostKeyRejected(
        f"{where}: host key unknown: {algorithm} {key.get_fingerprint()} is not in known_hosts; "
        f"if that is the host's key, add it with {scan} >> {shlex.quote(trust.files[0])}"
    )


def _listed(trust: _Trust) -> tuple[str, int] | None:
    """The first known_hosts line (file, line number) that lists this host, hashed names included (asyncssh
    matches each line as it would the whole file); None when no line does. Read only after a refusal."""
    addr = trust.key_name if _is_address(trust.key_name) else ""
    port = trust.port if trust.port != 22 else None
    for path in trust.files:
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                matched = asyncssh.import_known_hosts(line).match(trust.key_name, addr, port)
            except (ValueError, asyncssh.Error):
                continue
            if any(matched[:3]):  # host keys, CA keys, revoked keys
                return path, number
    return None


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


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
    if isinstance(exc, OSError) and exc.filename is not None:
        # A local file asyncssh read (a key or known_hosts file named in ~/.ssh/config): name it.
        return HostUnreachable(f"{where}: {exc.filename}: {(exc.strerror or str(exc)).lower()}")
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
