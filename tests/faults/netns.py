"""A "remote" host on its own network, and the rig of the network and trust fault tests.

:func:`host_network` yields a :class:`Network`: the address a server listens on and the command prefix that
runs it there. Where ``ip netns add`` works (root, iproute2), that is a fresh namespace whose end of the veth
pair has the second address of a /30 taken from 10.200.0.0/16 (the first stays on this side); elsewhere it is
loopback, with no prefix, so that the same scenario still runs. The namespace and the link are removed on the
way out, even when the test fails; namespaces left behind by a test process that was killed are removed the
next time one is made. :func:`netns_sshd` starts a real sshd inside such a network, for a simulated pueue host
(the namespace separates the network only: the sshd still sees the host's files, pueue's socket included).

A :class:`Rig` (from :func:`rig`) holds what a test starts: simulated hosts behind real sshd, fault proxies, a
running daemon with a webhook receiver and its metrics endpoint, and readers of what the daemon did. It stops
everything in reverse order, even when the test fails: the daemon first, then proxies, sshd servers and pueue
simulators, then the receiver, and the namespace last.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.faults.fault_proxy import FaultProxy
from tests.faults.ledger import Ledger
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import sim_env, ssh_entry, to_toml, write_config
from tests.harness.receiver import Receiver
from tests.harness.services import free_port
from tests.harness.sshd import ClientKeys, SSHServer, _descendants
from tests.pueue_sim.scenario import SimHost

_PREFIX = "pwfault"  # namespaces and links of this module: pwfault<pid>n<k>, pwf<pid>a<k>
_NAME = re.compile(rf"^{_PREFIX}(\d+)n(\d+)\b")
_counter = itertools.count()


@dataclass(frozen=True)
class Network:
    """Where a server of the "remote" host listens, and how to run a command there."""

    address: str  # the server's address, reachable from this namespace
    wrapper: tuple[str, ...] = ()  # prefix of a command that must run on the remote side
    namespace: str | None = None  # None: loopback (no namespace could be made)
    link: str | None = None  # the namespace's end of the veth pair

    def set_link(self, *, up: bool) -> None:
        """Take the namespace's interface down (the machine is gone from the network) or up again."""
        assert self.namespace is not None and self.link is not None
        _ip("-n", self.namespace, "link", "set", self.link, "up" if up else "down")


LOOPBACK = Network("127.0.0.1")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale() -> None:
    """Namespaces of test processes that are gone (killed before their cleanup ran)."""
    listing = _ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        match = _NAME.match(line)
        if match and not _alive(int(match.group(1))):
            _ip("netns", "del", match.group(0), check=False)


def _free_block() -> tuple[str, str]:
    """A /30 of 10.200.0.0/16 that no interface here uses yet: (this side, the namespace's side)."""
    used = _ip("-o", "-4", "addr", "show", check=False).stdout
    routes = _ip("-4", "route", "show", check=False).stdout
    blocks = list(range(1, 16384))
    random.Random(os.getpid()).shuffle(blocks)
    for block in blocks:
        third, fourth = divmod(block * 4, 256)
        base = f"10.200.{third}.{fourth}"
        near, far = f"10.200.{third}.{fourth + 1}", f"10.200.{third}.{fourth + 2}"
        if f" {near}/" not in used and f" {far}/" not in used and f"{base}/30" not in routes:
            return near, far
    raise RuntimeError("no free /30 in 10.200.0.0/16")


def _why_not() -> str | None:
    """Why no namespace can be made here, or None."""
    if shutil.which("ip") is None:
        return "iproute2 is not installed"
    if os.geteuid() != 0:
        return "not root"
    return None


@contextlib.contextmanager
def host_network() -> Iterator[Network]:
    """A fresh namespace behind a veth pair, or loopback where namespaces cannot be made."""
    if _why_not() is not None:
        yield LOOPBACK
        return
    _remove_stale()
    k = next(_counter)
    pid = os.getpid()
    namespace, near_if, far_if = f"{_PREFIX}{pid}n{k}", f"pwf{pid}a{k}", f"pwf{pid}b{k}"
    try:
        _ip("netns", "add", namespace)
    except subprocess.CalledProcessError:  # no CAP_SYS_ADMIN after all (a container): loopback
        yield LOOPBACK
        return
    try:
        near, far = _free_block()
        inside = ("ip", "netns", "exec", namespace)
        _ip("link", "add", near_if, "type", "veth", "peer", "name", far_if)
        _ip("link", "set", far_if, "netns", namespace)
        _ip("addr", "add", f"{near}/30", "dev", near_if)
        _ip("link", "set", near_if, "up")
        _ip("-n", namespace, "addr", "add", f"{far}/30", "dev", far_if)
        _ip("-n", namespace, "link", "set", far_if, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        yield Network(far, inside, namespace, far_if)
    finally:
        # Deleting the near end removes its peer too; the namespace goes once no process is left in it.
        _ip("link", "del", near_if, check=False)
        _ip("netns", "del", namespace, check=False)


def netns_sshd(root: Path, keys: ClientKeys, env: dict[str, str], network: Network) -> SSHServer:
    """A started sshd on ``network`` (its key in ``keys.known_hosts`` under the network's address)."""
    return SSHServer(root, keys, env, listen=network.address, wrapper=network.wrapper).start()


def trust(known_hosts: Path, address: str, port: int, server: SSHServer) -> None:
    """Add ``[address]:port`` with ``server``'s current host key (a proxy in front of it is that server)."""
    kind, key = (server.root / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    with known_hosts.open("a") as out:
        out.write(f"[{address}]:{port} {kind} {key}\n")


# ------------------------------------------------------------------------------------ the rig


class Metrics:
    """The running daemon's /metrics, read as a Prometheus scrape would."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:  # noqa: S310 - loopback
                text = response.read().decode()
        except OSError:
            return {}
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def polls(self, host: str) -> int:
        """Polls of ``host`` that have finished, failed ones included."""
        return int(self.samples().get(("pueue_watcher_poll_duration_seconds_count", (("host", host),)), 0))

    def failures(self, host: str) -> dict[str, int]:
        """Failed polls of ``host`` by reason (only reasons that occurred)."""
        return {
            dict(labels)["reason"]: int(value)
            for (name, labels), value in self.samples().items()
            if name == "pueue_watcher_poll_failures_total" and dict(labels).get("host") == host and value
        }

    def ok(self, host: str) -> int:
        samples = self.samples()
        polls = samples.get(("pueue_watcher_poll_duration_seconds_count", (("host", host),)), 0)
        failed = sum(
            value
            for (name, labels), value in samples.items()
            if name == "pueue_watcher_poll_failures_total" and dict(labels).get("host") == host
        )
        return int(polls - failed)

    def tasks(self, host: str, group: str, status: str) -> int:
        key = ("pueue_tasks", (("group", group), ("host", host), ("status", status)))
        return int(self.samples().get(key, -1))


@dataclass
class Rig:
    root: Path
    network: Network  # where the faulted host lives: a namespace, or loopback
    stack: ExitStack
    keys: ClientKeys = field(init=False)
    hook: Receiver = field(init=False)
    metrics: Metrics = field(init=False)
    metrics_port: int = field(default_factory=free_port)
    daemon: DaemonProcess | None = None
    config: Path | None = None

    def __post_init__(self) -> None:
        self.keys = ClientKeys(self.root / "client")
        self.hook = self.stack.enter_context(Receiver())
        self.metrics = Metrics(self.metrics_port)

    def sim(self, name: str, flavor: str = "v4") -> SimHost:
        sim = SimHost(self.root / name, flavor)
        self.stack.callback(sim.close)
        return sim

    def sshd(self, name: str, sim: SimHost, network: Network | None = None) -> SSHServer:
        """A real sshd for ``sim``, on the rig's network (a namespace where there is one) unless told so."""
        server = netns_sshd(self.root / f"sshd-{name}", self.keys, sim_env(sim), network or self.network)
        self.stack.callback(server.stop)
        return server

    def proxy(self, server: SSHServer) -> FaultProxy:
        """A fault proxy on loopback in front of ``server``, trusted under its own address."""
        proxy = FaultProxy(server.port, target_host=server.listen).start()
        self.stack.callback(proxy.stop)
        trust(self.keys.known_hosts, "127.0.0.1", proxy.port, server)
        return proxy

    def entry(self, name: str, server: SSHServer, sim: SimHost, via: FaultProxy | None = None,
              **extra: Any) -> dict[str, Any]:  # fmt: skip
        """The [[hosts]] entry of ``sim``: straight to ``server``, or through the proxy ``via``."""
        address, port = ("127.0.0.1", via.port) if via is not None else (server.listen, server.port)
        known = str(self.keys.known_hosts)
        return ssh_entry(name, server, sim, address=address, port=port, known_hosts=known, **extra)

    def start(self, hosts: list[dict[str, Any]], **watcher: Any) -> DaemonProcess:
        """Write the configuration and start the daemon, with a webhook to the receiver and /metrics on."""
        settings = {"poll_interval": "1s", "fast_interval": 0, "state_path": str(self.root / "state.db")}
        config = write_config(
            self.root / "config.toml",
            hosts,
            watcher=settings | watcher,
            metrics={"listen": f"127.0.0.1:{self.metrics_port}"},
        )
        with config.open("a") as out:
            out.write(
                f'[[alerts]]\nname = "hook"\nkind = "webhook"\nurl = {to_toml(self.hook.url + "/hook")}\n'
            )
            out.write('timeout = "5s"\n')
        self.config = config
        self.daemon = DaemonProcess(config, self.root / "daemon.log").start()
        self.stack.callback(self.daemon.stop)
        return self.daemon

    # -------------------------------------------------------------- what happened

    def log(self, name: str, host: str | None = None) -> list[dict[str, Any]]:
        """The daemon's log lines named ``name`` (of ``host``)."""
        assert self.daemon is not None
        return [e for e in self.daemon.events(name) if host is None or e.get("host") == host]

    def received(self) -> list[dict[str, Any]]:
        """Every event the receiver got, in order (repeats included)."""
        return [event for request in self.hook.requests for event in request.json()["events"]]

    def received_of(self, kind: str, host: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.received() if e["event"] == kind and (host is None or e["host"] == host)]

    def committed(self) -> list[dict[str, Any]]:
        """The events the daemon committed to its store, in commit order (read-only)."""
        path = self.root / "state.db"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT id, event, host, body FROM events ORDER BY seq").fetchall()
        return [{"id": i, "event": e, "host": h, **json.loads(body)} for i, e, h, body in rows]

    def freeze(self, server: SSHServer) -> None:
        """SIGSTOP sshd and every session it forked: connections stay open, nothing answers. A test that
        fails before it kills them leaves no stopped process behind."""
        assert server.proc is not None
        pids = [server.proc.pid, *_descendants(server.proc.pid)]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        self.stack.callback(_kill_all, pids)

    def wait(self, predicate: Callable[[], Any], timeout: float = 120) -> Any:
        assert self.daemon is not None
        return self.daemon.wait_for(predicate, timeout=timeout)

    def account(self, ledger: Ledger) -> None:
        """Stop the daemon (SIGTERM: it drains its outbox) and tell the ledger what was committed and got."""
        assert self.daemon is not None
        if self.daemon.proc is not None:
            assert self.daemon.terminate() == 0
        committed = self.committed()
        received = self.received()
        phases = [e["phase"] for e in received if e["event"] == "phase.completed"]
        ledger.events([e["id"] for e in committed], [e["id"] for e in received], phases)
        missing = {e["id"] for e in committed} - {e["id"] for e in received}
        assert not missing, f"committed but never delivered: {sorted(missing)}"


@contextlib.contextmanager
def rig(root: Path) -> Iterator[Rig]:
    with ExitStack() as stack:
        network = stack.enter_context(host_network())
        yield Rig(root, network, stack)


def _kill_all(pids: list[int]) -> None:
    """SIGKILL those of ``pids`` that are still stopped (sshd processes that the test froze and never killed;
    a pid that is not stopped any more was killed and may belong to someone else by now)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "T":
                os.kill(pid, signal.SIGKILL)


def reboot_pueue(sim: SimHost) -> None:
    """The host loses power: pueued and every task it started die at once (SIGKILL), the state file stays
    as pueued last wrote it (tasks Running), and the pid file is left behind."""
    sim.kill_daemon()
    for pgid in sim.orphans:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    sim.orphans.clear()
