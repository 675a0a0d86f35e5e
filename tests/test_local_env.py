"""The local transport's children get a minimal environment: what pueue needs, not the watcher's secrets."""

from __future__ import annotations

import pytest

from watcher.transport.local import LocalTransport


async def test_local_children_get_only_what_pueue_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    """PUEUE_WATCHER__* secrets and unrelated variables stay out; HOME, XDG dirs, locale and TZ pass."""
    kept = {
        "HOME": "/home/op",
        "XDG_RUNTIME_DIR": "/run/user/1000",
        "XDG_CONFIG_HOME": "/home/op/.config",
        "PUEUE_CONFIG_PATH": "/etc/pueue.yml",
        "LC_CTYPE": "C.UTF-8",
        "TZ": "Europe/Berlin",
    }
    for key, value in kept.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PUEUE_WATCHER__CLICKHOUSE__0__PASSWORD", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    result = await LocalTransport().run(["env"], timeout=10)
    assert result.exit_status == 0
    env = dict(line.split("=", 1) for line in bytes(result.stdout).decode().splitlines() if "=" in line)
    assert {key: env.get(key) for key in kept} == kept
    assert "PATH" in env
    assert "hunter2" not in bytes(result.stdout).decode()
    assert not [key for key in env if key.startswith("PUEUE_WATCHER") or key == "AWS_SECRET_ACCESS_KEY"]
