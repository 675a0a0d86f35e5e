"""The cycle's pure rules, one by one: a gate's decision, a check result's event, the failing host's backoff.
tests/test_cycle.py runs them inside a cycle; here each branch is named."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from watcher.config import GateConfig, WatcherSection
from watcher.events import check_result
from watcher.gates import decide
from watcher.records import CheckRun, PhaseRecord
from watcher.schedule import BACKOFF_LIMIT, retry_interval

AT = datetime(2026, 3, 1, tzinfo=UTC)
GATE = GateConfig(host="h", after="p1", start="p2")


def phase(outcome: str, **counts: int) -> PhaseRecord:
    return PhaseRecord(id="h/p1/0", host="h", group="p1", status="completed", opened_at=AT, outcome=outcome,
                       counts=counts or {"success": 3})  # fmt: skip


def run(status: str, violations: float | None = 0, error: str | None = None) -> CheckRun:
    result = {"violations": violations, "threshold": 0, "error": error}
    return CheckRun(
        phase_id="h/p1/0", check="rows", host="h", group="p1", status=status, result=result, at=AT
    )


@pytest.mark.parametrize(
    ("gate", "outcome", "runs", "expected"),
    [
        (GATE, "success", [run("ok")], (True, "p1 complete, 1 checks passed")),
        (GATE, "success", [], (True, "p1 complete, no checks configured")),
        (GATE, "success", [run("warn", 2)], (False, "check rows warn")),
        (GATE, "success", [run("error", None, "timeout")], (False, "check rows error")),
        (GATE, "failed", [run("ok")], (False, "phase p1 failed (1 tasks did not succeed)")),
        (GATE.model_copy(update={"on_fail": "start"}), "success", [run("fail", 4)],
         (True, "check rows fail; starting anyway (on_fail = start)")),
    ],
)  # fmt: skip
def test_a_gate_starts_only_when_the_phase_and_every_check_passed(
    gate: GateConfig, outcome: str, runs: list[CheckRun], expected: tuple[bool, str]
) -> None:
    counts = {"success": 2, "failed": 1} if outcome == "failed" else {"success": 3}
    assert decide(gate, phase(outcome, **counts), runs) == expected


def test_a_gate_whose_phase_is_unknown_decides_on_the_checks_alone() -> None:
    assert decide(GATE, None, [run("ok")]) == (True, "p1 complete, 1 checks passed")


@pytest.mark.parametrize(
    ("status", "previous", "kind"),
    [
        ("fail", None, "check.failed"),
        ("warn", "ok", "check.warned"),
        ("error", "fail", "check.errored"),
        ("ok", "fail", "check.recovered"),
        ("ok", "error", "check.recovered"),
        ("ok", "ok", None),
        ("ok", None, None),
        ("ok", "pending", None),
    ],
)
def test_a_check_result_is_news_when_it_is_not_ok_or_recovers(
    status: str, previous: str | None, kind: str | None
) -> None:
    event = check_result(run(status, 0 if status == "ok" else 5), previous)
    assert (event.event if event else None) == kind
    if event is not None:
        assert event.id.endswith("h/p1/0:rows") and event.group == "p1"


def test_a_failing_host_is_retried_after_an_interval_then_twice_then_four_times_as_long() -> None:
    settings = WatcherSection(poll_interval=60)
    waits = [retry_interval(failures, settings) for failures in range(1, 8)]
    assert waits == [60, 120, 240, 240, 240, 240, 240]
    assert max(waits) == BACKOFF_LIMIT * 60
    assert retry_interval(10_000, settings) == 240  # no overflow for a host down for weeks
