"""One host's cycle, in process (tests/harness/cycle.py): each stage's branches and the store failure path.

The same scenarios run against sshd, a real pueued and ClickHouse in tests/test_daemon_e2e.py,
tests/test_checks_e2e.py and tests/real_pueue/; here each takes milliseconds.
"""

from __future__ import annotations

from pathlib import Path

from tests.harness.cycle import OK, cycles, done, events, settings, snapshot, task
from watcher.errors import HostKeyRejected, HostUnreachable
from watcher.pueue.model import Result, Status
from watcher.remote.clean import CLEAN_DEFERRED
from watcher.transport.base import CommandResult

RUNNING = snapshot(task(0, "p1"), task(1, "p1", Status.QUEUED))
COMPLETE = snapshot(done(0, "p1"), done(1, "p1"))
FAILED = snapshot(done(0, "p1"), done(1, "p1", Result.FAILED))


# -- observe ------------------------------------------------------------------------------------------------


async def test_a_group_that_completes_is_recorded_once(tmp_path: Path) -> None:
    async with cycles(tmp_path) as c:
        await c.cycle(RUNNING)
        outcome = await c.cycle(COMPLETE)
        assert [(p.group, p.status, p.outcome) for p in outcome.phases] == [("p1", "completed", "success")]
        assert [e.event for e in outcome.events] == ["phase.completed"]
        again = await c.cycle(COMPLETE)
        assert again.phases == [] and again.events == []
        assert await events(c, "phase.completed") == ["phase.completed"]


async def test_an_unchanged_poll_is_not_stepped_through(tmp_path: Path) -> None:
    async with cycles(tmp_path) as c:
        await c.cycle(RUNNING)
        # "unchanged": the host says its state file is as it was; the snapshot it carries is the old one.
        outcome = await c.cycle(COMPLETE, source="unchanged")
        assert outcome.phases == []
        assert [p.outcome for p in (await c.cycle(COMPLETE)).phases] == ["success"]


# -- availability and schedule ------------------------------------------------------------------------------


async def test_a_host_is_down_after_down_after_failures_and_up_once_it_answers(tmp_path: Path) -> None:
    async with cycles(tmp_path, settings(watcher={"down_after": 3, "poll_interval": 60})) as c:
        waits = []
        for _ in range(4):
            outcome = await c.cycle(HostUnreachable("connection refused"))
            waits.append(c.watch.interval)
            assert outcome.phases == []
        assert await events(c) == ["host.down"]
        assert waits == [60, 120, 240, 240]  # backoff: doubled, up to four intervals
        outcome = await c.cycle(RUNNING)
        assert [e.event for e in outcome.events] == ["host.up"]
        assert c.watch.interval == 60
        await c.cycle(HostUnreachable("connection refused"))
        assert await events(c) == ["host.down", "host.up"]  # one failure is not down


async def test_a_refused_host_key_is_down_at_the_first_failure(tmp_path: Path) -> None:
    async with cycles(tmp_path) as c:
        await c.cycle(HostKeyRejected("host key changed"))
        assert await events(c) == ["host.down"]


async def test_the_last_wave_is_polled_at_the_fast_interval(tmp_path: Path) -> None:
    async with cycles(tmp_path, settings(watcher={"poll_interval": 300, "fast_interval": 5})) as c:
        await c.cycle(RUNNING)  # a task waits to start: not the last wave
        assert c.watch.interval == 300
        await c.cycle(snapshot(task(0, "p1"), done(1, "p1")))
        assert c.watch.interval == 5


# -- checks and gates ---------------------------------------------------------------------------------------

GATED = {
    "clickhouse": [{"name": "ch"}],
    "checks": [{"name": "rows", "kind": "sql", "clickhouse": "ch", "sql": "SELECT count() FROM t"}],
    "gates": [{"host": "h", "after": "p1", "start": "p2"}],
}
P2_PAUSED = {"p2": "Paused"}


async def _gate(tmp_path: Path, final: object, violations: int = 0, **gate: str) -> tuple[list[str], str]:
    config = settings(**{**GATED, "gates": [{"host": "h", "after": "p1", "start": "p2", **gate}]})
    async with cycles(tmp_path, config) as c:
        c.clickhouse.violations = violations
        await c.cycle(snapshot(task(0, "p1"), groups=P2_PAUSED))
        c.answer(OK)
        outcome = await c.cycle(final)  # type: ignore[arg-type]
        (action,) = outcome.gates[-1:]
        return c.transport.calls[-1], f"{action.status}: {action.reason}"


async def test_a_gate_starts_the_next_group_when_the_phase_and_its_checks_pass(tmp_path: Path) -> None:
    command, action = await _gate(tmp_path, snapshot(done(0, "p1"), groups=P2_PAUSED))
    assert command[-2:] == ["start", "--group=p2"]
    assert action == "started: p1 complete, 1 checks passed"


async def test_a_gate_holds_the_next_group_when_a_check_fails(tmp_path: Path) -> None:
    command, action = await _gate(tmp_path, snapshot(done(0, "p1"), groups=P2_PAUSED), violations=7)
    assert command[-3:] == ["pause", "--wait", "--group=p2"]
    assert action == "held: check rows fail"


async def test_a_gate_holds_the_next_group_when_tasks_failed(tmp_path: Path) -> None:
    final = snapshot(done(0, "p1", Result.FAILED), groups=P2_PAUSED)
    command, action = await _gate(tmp_path, final)
    assert command[-3:] == ["pause", "--wait", "--group=p2"]
    assert action == "held: phase p1 failed (1 tasks did not succeed)"


async def test_on_fail_start_starts_anyway(tmp_path: Path) -> None:
    command, action = await _gate(tmp_path, snapshot(done(0, "p1"), groups=P2_PAUSED), violations=1,
                                  on_fail="start")  # fmt: skip
    assert command[-2:] == ["start", "--group=p2"]
    assert action.endswith("starting anyway (on_fail = start)")


async def test_a_gate_whose_command_fails_is_recorded_as_an_error(tmp_path: Path) -> None:
    async with cycles(tmp_path, settings(**GATED)) as c:
        await c.cycle(snapshot(task(0, "p1"), groups=P2_PAUSED))
        c.answer(CommandResult(1, b"", b"Error: Group p2 doesn't exist"))
        outcome = await c.cycle(snapshot(done(0, "p1"), groups=P2_PAUSED))
        action = outcome.gates[-1]
        assert action.status == "error" and "Group p2 doesn't exist" in (action.reason or "")
        assert (await c.cycle(snapshot(done(0, "p1"), groups=P2_PAUSED))).gates == []  # decided once


async def test_a_check_runs_once_per_phase_and_reports_a_change(tmp_path: Path) -> None:
    async with cycles(tmp_path, settings(**{k: GATED[k] for k in ("clickhouse", "checks")})) as c:
        c.clickhouse.violations = 3
        await c.cycle(RUNNING)
        outcome = await c.cycle(FAILED)
        assert [(r.check, r.status) for r in outcome.checks] == [("rows", "fail")]
        assert [e.event for e in outcome.events] == ["phase.completed", "check.failed"]
        assert len(c.clickhouse.queries) == 1
        assert (await c.cycle(FAILED)).checks == [] and len(c.clickhouse.queries) == 1
        # The next phase of the group passes: the check recovered.
        c.clickhouse.violations = 0
        await c.cycle(snapshot(done(0, "p1"), done(1, "p1", Result.FAILED), task(2, "p1")))
        outcome = await c.cycle(snapshot(done(0, "p1"), done(1, "p1", Result.FAILED), done(2, "p1")))
        assert [e.event for e in outcome.events] == ["phase.completed", "check.recovered"]


# -- hygiene ------------------------------------------------------------------------------------------------

BIG = 10_000_000


async def test_no_clean_when_off_or_below_the_limit(tmp_path: Path) -> None:
    for hygiene, size in (
        ({"clean": "off", "max_state_bytes": "1MB"}, BIG),
        ({"max_state_bytes": "50MB"}, BIG),
    ):
        async with cycles(tmp_path / str(len(str(hygiene))), settings(hygiene=hygiene)) as c:
            await c.cycle(RUNNING, state_file_bytes=size)
            await c.cycle(COMPLETE, state_file_bytes=size)
            assert not c.watch.cleaning_now and c.transport.calls == []


async def test_a_large_state_file_is_cleaned_and_the_clean_recorded_from_the_next_poll(
    tmp_path: Path,
) -> None:
    async with cycles(tmp_path, settings(hygiene={"max_state_bytes": "1MB"})) as c:
        await c.cycle(RUNNING, state_file_bytes=BIG)
        c.answer(CommandResult(0, b"", b""))
        await c.cycle(COMPLETE, state_file_bytes=BIG)
        assert c.watch.cleaning_now
        await c.watch.clean_finished()
        assert "clean" in " ".join(c.transport.calls[-1])
        outcome = await c.cycle(snapshot(groups={"p1": "Running"}), state_file_bytes=2_000)
        assert outcome.clean is not None and not outcome.clean.partial and outcome.clean.bytes_after == 2_000
        assert "state.cleaned" in [e.event for e in outcome.events] and not c.watch.cleaning_now


async def test_a_dry_run_clean_records_its_plan_and_sends_nothing(tmp_path: Path) -> None:
    async with cycles(tmp_path, settings(hygiene={"max_state_bytes": "1MB", "dry_run": True})) as c:
        await c.cycle(RUNNING, state_file_bytes=BIG)
        outcome = await c.cycle(COMPLETE, state_file_bytes=BIG)
        assert outcome.clean is not None and outcome.clean.dry_run and c.transport.calls == []


# -- the store failing mid-cycle ----------------------------------------------------------------------------


async def test_a_store_failure_mid_cycle_loses_no_completion(tmp_path: Path) -> None:
    async with cycles(tmp_path, settings(**GATED)) as c:
        await c.cycle(snapshot(task(0, "p1"), groups=P2_PAUSED))
        c.store.failing = {"commit"}
        outcome = await c.cycle(snapshot(done(0, "p1"), groups=P2_PAUSED))
        assert outcome.error == "database or disk is full (injected)"
        assert outcome.gates == [] or all(g.status == "pending" for g in outcome.gates)
        # Nothing ran ahead of the store: no gate acted, no phase is completed.
        assert c.transport.calls == [] and [p.status for p in await c.store.phases()] == ["open"]
        c.store.failing = set()
        c.answer(OK)
        outcome = await c.cycle(snapshot(done(0, "p1"), groups=P2_PAUSED))
        assert outcome.error is None
        assert [e.event for e in outcome.events] == ["phase.completed", "gate.started"]
        assert [p.status for p in await c.store.phases()] == ["completed"]


async def test_a_store_failure_at_availability_still_schedules_the_next_poll(tmp_path: Path) -> None:
    async with cycles(tmp_path, settings(watcher={"down_after": 1, "poll_interval": 60})) as c:
        c.store.failing = {"commit"}
        outcome = await c.cycle(HostUnreachable("connection refused"))
        assert outcome.error is not None and c.watch.interval == 60
        c.store.failing = set()
        await c.cycle(HostUnreachable("connection refused"))
        assert await events(c) == ["host.down"]  # reported once the store took it


async def test_a_clean_deferred_by_the_host_is_recorded_and_planned_again(tmp_path: Path) -> None:
    async with cycles(tmp_path, settings(hygiene={"max_state_bytes": "1MB"})) as c:
        await c.cycle(RUNNING, state_file_bytes=BIG)
        c.answer(CommandResult(0, CLEAN_DEFERRED + b"\n", b""))  # a task finished since the plan's poll
        await c.cycle(COMPLETE, state_file_bytes=BIG)
        await c.watch.clean_finished()
        c.answer(OK)
        outcome = await c.cycle(COMPLETE, state_file_bytes=BIG)  # records the deferral, plans again
        assert outcome.clean is None and "state.cleaned" not in [e.event for e in outcome.events]
        assert [r.deferred for r in await c.store.cleans("h")] == [True, False]  # the plan, marked; the next
        assert c.watch.cleaning_now


async def test_a_clean_the_host_refuses_is_an_error_of_the_cycle_not_a_record(tmp_path: Path) -> None:
    async with cycles(tmp_path, settings(hygiene={"max_state_bytes": "1MB"})) as c:
        await c.cycle(RUNNING, state_file_bytes=BIG)
        c.answer(CommandResult(2, b"", b"Error: Failed to connect to daemon"))
        await c.cycle(COMPLETE, state_file_bytes=BIG)
        await c.watch.clean_finished()
        outcome = await c.cycle(COMPLETE, state_file_bytes=BIG, clean=False)
        assert outcome.error is not None and "pueue clean failed (exit 2)" in outcome.error
        assert outcome.clean is None and not c.watch.cleaning_now


async def test_a_clean_that_left_planned_tasks_is_partial(tmp_path: Path) -> None:
    async with cycles(tmp_path, settings(hygiene={"max_state_bytes": "1MB"})) as c:
        await c.cycle(RUNNING, state_file_bytes=BIG)
        c.answer(OK)
        await c.cycle(COMPLETE, state_file_bytes=BIG)
        await c.watch.clean_finished()
        outcome = await c.cycle(snapshot(done(1, "p1")), state_file_bytes=BIG // 2, clean=False)
        assert outcome.clean is not None and outcome.clean.partial and outcome.clean.kept == {"p1": 1}


async def test_a_pending_gate_whose_gate_was_removed_from_the_configuration_is_left_alone(
    tmp_path: Path,
) -> None:
    async with cycles(tmp_path, settings(**GATED)) as c:
        await c.cycle(snapshot(task(0, "p1"), groups=P2_PAUSED))
        c.store.failing = {"check_runs"}  # the phase and its pending gate are committed; the checks fail
        await c.cycle(snapshot(done(0, "p1"), groups=P2_PAUSED))
    ungated = settings(**{k: GATED[k] for k in ("clickhouse", "checks")})
    async with cycles(tmp_path, ungated) as c:  # restarted without the gate, on the same store
        await c.cycle(snapshot(done(0, "p1"), groups=P2_PAUSED))
        assert c.transport.calls == []
        assert [g.status for g in await c.store.gate_actions(host="h")] == ["pending"]


async def test_a_clean_the_last_process_never_saw_end_is_taken_up_after_a_restart(tmp_path: Path) -> None:
    """Killed while its whole-host ``clean -s`` ran, the watcher had seen group b's task running; the clean
    removed it just as it succeeded. After the restart that task is gone: it completes b's phase as the
    success it was (not an abandoned phase), and the clean's record is settled by a poll of the new
    process."""
    config = settings(hygiene={"max_state_bytes": "1MB"})
    async with cycles(tmp_path, config) as c:
        await c.cycle(snapshot(task(0, "a"), task(1, "b")), state_file_bytes=BIG)
        c.answer(OK)
        await c.cycle(snapshot(done(0, "a"), task(1, "b")), state_file_bytes=BIG)  # plans and sends the clean
        assert c.watch.cleaning_now
        # killed here: no poll of this process shows what the clean did
    async with cycles(tmp_path, config) as c:
        (plan,) = await c.store.cleans("h")
        assert (plan.scope, plan.seen) == ("host", False)
        outcome = await c.cycle(snapshot(groups={"a": "Running", "b": "Running"}), state_file_bytes=2_000)
        assert [(p.group, p.status, p.outcome) for p in outcome.phases] == [("b", "completed", "success")]
        assert not c.watch.cleaning_now  # taken up, but not waited for (a `once` does not sleep its budget)
        outcome = await c.cycle(snapshot(groups={"a": "Running", "b": "Running"}), state_file_bytes=2_000)
        assert outcome.clean is not None and outcome.clean.seen and outcome.clean.bytes_after == 2_000
        assert outcome.clean.note is not None and "restart" in outcome.clean.note
        assert [p.status for p in await c.store.phases()] == ["completed", "completed"]
        assert await events(c, "phase.completed") == ["phase.completed"] * 2
