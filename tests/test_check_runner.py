"""The check runner and registry: errors are results, never crashes; plug-ins come from entry points."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

import checks.registry as registry
from checks.base import CheckContext, CheckResult, CheckStatus, evaluate
from checks.config import PluginCheckConfig
from checks.runner import run_check


class _Reader:
    probes: Mapping[str, float | None] = {}

    async def run(self, argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
        return 0, b"", b""


async def _no_clickhouse(name: str) -> Any:
    raise AssertionError("not used")


CTX = CheckContext("h", "g", None, _no_clickhouse, _Reader())


class Raising:
    name, kind = "boom", "plugin"

    async def run(self, ctx: CheckContext) -> CheckResult:
        raise RuntimeError("database\nexploded")


class Slow:
    name, kind = "slow", "plugin"

    async def run(self, ctx: CheckContext) -> CheckResult:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")


class Liar:
    name, kind = "liar", "plugin"

    async def run(self, ctx: CheckContext) -> Any:
        return "ok"


async def test_an_exception_is_an_error_result() -> None:
    result = await run_check(Raising(), CTX, timeout=5)
    assert result.status is CheckStatus.ERROR
    assert result.error == "database exploded"


async def test_a_timeout_is_an_error_result() -> None:
    result = await run_check(Slow(), CTX, timeout=0.2)
    assert (result.status, result.error) == (CheckStatus.ERROR, "timed out after 0.2s")


async def test_a_wrong_return_value_is_an_error_result() -> None:
    result = await run_check(Liar(), CTX, timeout=5)
    assert result.status is CheckStatus.ERROR


@pytest.mark.parametrize(
    ("violations", "warn", "fail", "status"),
    [(0, None, 0, "ok"), (1, None, 0, "fail"), (3, 1, 5, "warn"), (6, 1, 5, "fail"), (1, 1, 5, "ok")],
)
def test_thresholds(violations: float, warn: float | None, fail: float, status: str) -> None:
    assert evaluate(violations, warn, fail).value == status


def test_plugin_checks_come_from_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kind that is not built in is looked up in `pueue_watcher.checks`; an unknown one is a clear error."""

    class Entry:
        name = "gpu-memory"

        def load(self) -> Any:
            return lambda config: ("built", config.name, config.model_extra)

    def entry_points(group: str) -> list[Entry]:
        assert group == "pueue_watcher.checks"
        return [Entry()]

    monkeypatch.setattr(registry, "entry_points", entry_points)
    config = PluginCheckConfig(name="gpu", kind="gpu-memory", limit=3)  # type: ignore[call-arg]
    assert registry.build(config) == ("built", "gpu", {"limit": 3})  # type: ignore[comparison-overlap]
    with pytest.raises(registry.UnknownCheckKind, match="no check of kind 'nope'"):
        registry.build(PluginCheckConfig(name="x", kind="nope"))


def test_built_in_kinds_resolve() -> None:
    """Every entry of the built-in table names a class that exists."""
    for kind in registry.BUILT_IN:
        assert callable(registry._factory(kind))
