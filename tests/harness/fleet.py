"""Simulated pueue hosts behind real sshd servers, and the watcher configuration that points at them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.harness.sshd import ClientKeys, SSHServer
from tests.pueue_sim.scenario import SimHost

REPO = Path(__file__).resolve().parents[2]


def ssh_entry(name: str, server: SSHServer, sim: SimHost | None, **extra: Any) -> dict[str, Any]:
    """The [[hosts]] entry of a host reached through ``server``."""
    entry: dict[str, Any] = {
        "name": name,
        "address": "127.0.0.1",
        "port": server.port,
        "user": server.user,
        "identity_file": str(server.keys.identity),
        "known_hosts": str(server.keys.known_hosts),
    }
    if sim is not None:
        entry |= {"pueue": str(sim.pueue_bin), "pueue_dir": str(sim.pueue_dir)}
    return entry | extra


def sim_env(sim: SimHost) -> dict[str, str]:
    """What the sshd of a simulated host sets in its sessions (SetEnv): where that host's pueue lives."""
    return {"PUEUE_CONFIG_PATH": str(sim.config_path), "TZ": sim.tz}


def to_toml(value: Any) -> str:
    """Enough TOML for test configurations (JSON strings are valid TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(to_toml(v) for v in value) + "]"
    raise TypeError(type(value))


def write_config(path: Path, hosts: list[Mapping[str, Any]], **sections: Mapping[str, Any]) -> Path:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {to_toml(v)}" for k, v in values.items()]
    for host in hosts:
        lines.append("[[hosts]]")
        lines += [f"{k} = {to_toml(v)}" for k, v in host.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def watcher(
    *args: str, timeout: float = 120, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m watcher ARGS`` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args],
        capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO, env=env,
    )  # fmt: skip


@contextmanager
def sim_host(root: Path, flavor: str) -> Iterator[SimHost]:
    sim = SimHost(root, flavor)
    try:
        sim.start_daemon()
        yield sim
    finally:
        sim.close()


__all__ = ["ClientKeys", "SSHServer", "sim_env", "sim_host", "ssh_entry", "watcher", "write_config"]
