"""Finding service binaries, free ports, and the CI rule: under CI=true a missing service fails."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The fast tier (`./dev test fast`: `-m "not integration"` and this variable) starts none of these services.
FAST_TIER = os.environ.get("PUEUE_WATCHER_TEST_TIER", "") == "fast"
SERVICES = frozenset({"sshd", "clickhouse-server", "prometheus", "promtool", "prometheus-alertmanager",
                      "alertmanager"})  # fmt: skip


def require_binary(*candidates: str) -> str:
    """The first existing binary; a missing one skips locally and fails under CI=true. In the fast tier a
    service's binary fails the test: it starts a service, so it belongs to the `integration` mark."""
    if FAST_TIER and SERVICES & {Path(c).name for c in candidates}:
        pytest.fail(f"{candidates[-1]} in the fast tier: mark the test integration (tests/conftest.py)",
                    pytrace=False)  # fmt: skip
    for candidate in candidates:
        found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if found:
            return found
    message = f"none of {', '.join(candidates)} is installed (./dev test installs it)"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def terminate(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; safe on a process that has already gone."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def kill(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL: the service vanishes mid-work, as after a crash."""
    if proc is not None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def http_ok(url: str) -> bool:
    """Whether ``url`` (on loopback) answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback test services
            return bool(response.status == 200)
    except OSError:
        return False


def wait_until_ready(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    timeout: float,
    what: str,
    log: Callable[[], str],
) -> None:
    """Poll ``ready`` until it holds; kill the process and raise with its log if it dies or takes too long."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            kill(proc)
            raise RuntimeError(f"{what} did not become ready: {log()}")
        time.sleep(0.05)
