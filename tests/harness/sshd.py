"""Real OpenSSH sshd processes on loopback, each with its own host key, config and environment.

Every server shares one client key and one known_hosts file (a line per server, as
``[127.0.0.1]:PORT ssh-ed25519 …``). ``SetEnv`` in each server's config gives the sessions on that
"host" their own environment: that is how one machine plays several workstations, each with its own pueue.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.services import free_port, require_binary, wait_for_port


def keygen(path: Path) -> Path:
    require_binary("ssh-keygen")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    return path


@dataclass
class ClientKeys:
    """The client side: one identity and one known_hosts file for every test server."""

    root: Path
    identity: Path = field(init=False)
    known_hosts: Path = field(init=False)
    authorized_keys: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.identity = keygen(self.root / "id_ed25519")
        self.authorized_keys = self.root / "authorized_keys"
        self.authorized_keys.write_text((self.root / "id_ed25519.pub").read_text())
        self.known_hosts = self.root / "known_hosts"
        self.known_hosts.touch()


@dataclass
class SSHServer:
    root: Path
    keys: ClientKeys
    env: dict[str, str]
    port: int = 0
    log_level: str = "VERBOSE"
    # Where it listens, and what its command line is prefixed with (``ip netns exec NS`` runs it inside a
    # network namespace, listening on that namespace's address).
    listen: str = "127.0.0.1"
    wrapper: tuple[str, ...] = ()
    # More sshd_config lines (``AcceptEnv *`` lets a test see what a client would pass).
    extra_config: tuple[str, ...] = ()
    host_key: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.host_key = keygen(self.root / "ssh_host_ed25519_key")
        self.trust()

    @property
    def user(self) -> str:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name

    def trust(self) -> None:
        """Put this server's current host key into the shared known_hosts file."""
        public = (self.root / "ssh_host_ed25519_key.pub").read_text().split()
        line = f"[{self.listen}]:{self.port} {public[0]} {public[1]}\n"
        lines = [
            existing
            for existing in self.keys.known_hosts.read_text().splitlines(keepends=True)
            if not existing.startswith(f"[{self.listen}]:{self.port} ")
        ]
        self.keys.known_hosts.write_text("".join(lines) + line)

    def rotate_host_key(self) -> None:
        """Give the server a new host key without telling known_hosts (a man in the middle, as seen)."""
        for suffix in ("", ".pub"):
            (self.root / f"ssh_host_ed25519_key{suffix}").unlink()
        keygen(self.root / "ssh_host_ed25519_key")

    def start(self) -> SSHServer:
        sshd = require_binary("/usr/sbin/sshd", "sshd")
        if os.getuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        config = self.root / "sshd_config"
        # sshd splits its options like a shell: double quotes keep spaces and single quotes literal.
        setenv = " ".join(f'"{k}={v}"' for k, v in self.env.items())
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.listen}",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {self.keys.authorized_keys}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    f"PidFile {self.root / 'sshd.pid'}",
                    "StrictModes no",
                    "UsePAM no",
                    "PrintMotd no",
                    "MaxStartups 100:30:200",
                    "MaxSessions 50",
                    f"LogLevel {self.log_level}",
                    f"SetEnv {setenv}" if setenv else "",
                    *self.extra_config,
                    "",
                ]
            )
        )
        self.proc = subprocess.Popen(
            [*self.wrapper, sshd, "-D", "-f", str(config), "-E", str(self.root / "sshd.log")],
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port, host=self.listen)
        except TimeoutError:
            self.stop()
            log = (self.root / "sshd.log").read_text(errors="replace")
            raise RuntimeError(f"sshd did not start on port {self.port}: {log[-2000:]}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def drop_connections(self) -> None:
        """Kill the listener and every sshd process it forked: each connection is cut at once (a reboot, as
        the client sees it). The commands of the sessions are left to end by themselves, their pipes gone:
        killing a login shell in the middle of its start-up files can leave their locks behind (root's
        ``pyenv rehash`` then makes every later session here wait 60 s for a lock nobody holds)."""
        if self.proc is None:
            return
        for pid in [*_descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                    os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        time.sleep(0.05)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (sshd forks a privilege-separation monitor, then the session)."""
    found: list[int] = []
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    for child in map(int, children.stdout.split()):
        found += [child, *_descendants(child)]
    return found
