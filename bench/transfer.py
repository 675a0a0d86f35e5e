"""What a poll costs on the wire, over a real sshd, with each compression choice.

A byte-counting TCP proxy sits between the watcher and sshd, so the figures are what crosses the network in
both directions: SSH framing, the command, the answer. For each choice (gzip or zstd on the host, the SSH
layer's zlib, or none) one connection is opened, then:

- a full poll of the 53,000-task state (what a poll costs when the state changed),
- an unchanged poll (target: at most 4 KB),

and the CPU the host spends compressing is measured by running the same compressor on the same file.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import best_of, fake_pueued, save, table
from bench.status_large import large_state
from tests.harness.proxy import CountingProxy
from tests.harness.sshd import ClientKeys, SSHServer
from watcher.config import HostConfig
from watcher.poll.poller import HostPoller
from watcher.transport.ssh import SSHTransport

CHOICES = ("gzip", "zstd", "ssh", "none")
# What each choice makes the host's CPU do. For "ssh" it is sshd's zlib at its default level, which
# `gzip -6` approximates (sshd's own CPU cannot be told apart from its other work).
COMPRESSORS = {"gzip": ["gzip", "-1", "-c"], "zstd": ["zstd", "-1", "-q", "-c"], "ssh": ["gzip", "-6", "-c"]}


async def _measure(host: HostConfig, proxy: CountingProxy) -> dict[str, Any]:
    transport = SSHTransport(host, connect_timeout=15, keepalive=30)
    poller = HostPoller(host, transport, timeout=120)
    try:
        proxy.reset()
        first = await poller.poll()  # connect + full poll
        assert first.ok, first.error
        connect_and_full = proxy.total
        proxy.reset()
        unchanged = await poller.poll()
        assert unchanged.source == "unchanged", unchanged
        unchanged_bytes = proxy.total
        poller._fingerprint = ""  # force a full transfer on the open connection
        proxy.reset()
        started = time.perf_counter()
        full = await poller.poll()
        full_seconds = time.perf_counter() - started
        assert full.source == "state", full
        return {
            "full_poll_bytes": proxy.total,
            "full_poll_seconds": full_seconds,
            "unchanged_poll_bytes": unchanged_bytes,
            "first_poll_bytes_with_connect": connect_and_full,
        }
    finally:
        await poller.close()


def run() -> dict[str, Any]:
    directory = large_state()
    state = directory / "state.json"
    daemon = fake_pueued(directory.parent / "fake-pueued")
    (directory / "pueue.pid").write_text(str(daemon.pid))
    figures: dict[str, Any] = {"state_bytes": state.stat().st_size, "choices": {}}
    with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmp:
        keys = ClientKeys(Path(tmp) / "client")
        server = SSHServer(Path(tmp) / "sshd", keys, {}).start()
        proxy = CountingProxy(server.port).start()
        try:
            for choice in CHOICES:
                host = HostConfig(
                    name="large",
                    address="127.0.0.1",
                    port=proxy.port,
                    user=server.user,
                    identity_file=str(keys.identity),
                    known_hosts="none",  # the proxy's port differs from the key's entry; bench only
                    pueue="pueue",
                    pueue_dir=str(directory),
                    compression=choice,  # type: ignore[arg-type]
                )
                figures["choices"][choice] = asyncio.run(_measure(host, proxy))
        finally:
            proxy.stop()
            server.stop()
            daemon.kill()
            daemon.wait()
            (directory / "pueue.pid").unlink(missing_ok=True)
    for choice, argv in COMPRESSORS.items():
        run_ = best_of(3, ["sh", "-c", f'{" ".join(argv)} "$0" > /dev/null', str(state)])
        figures["choices"][choice]["host_cpu_seconds"] = run_.cpu_seconds

    rows = [("choice", "full poll MB", "full poll s", "host CPU s", "unchanged poll B")]
    for choice, f in figures["choices"].items():
        rows.append((
            choice,
            f"{f['full_poll_bytes'] / 1e6:.2f}",
            f"{f['full_poll_seconds']:.2f}",
            f"{f.get('host_cpu_seconds', 0):.2f}",
            str(f["unchanged_poll_bytes"]),
        ))  # fmt: skip
    print(f"state file: {figures['state_bytes'] / 1e6:.1f} MB; one sshd on loopback behind a counting proxy")
    print(table(rows))
    worst_unchanged = max(f["unchanged_poll_bytes"] for f in figures["choices"].values())
    print(f"unchanged poll: at most {worst_unchanged} B on the wire (target <= 4096 B)")
    print(f"results: {save('transfer', figures)}")
    return figures
