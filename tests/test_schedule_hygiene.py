"""Adaptive polling decisions, and hygiene plans and outcomes, on hand-made snapshots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
from msgspec.structs import replace

from watcher.config import HostConfig, HygieneSection, WatcherSection
from watcher.hygiene import (
    BULK_ABOVE_TASKS,
    CHUNK_PAIRS,
    Hygiene,
    candidates,
    completed_bulk,
    next_chunk,
    per_group,
    settled,
    targets,
    vanished_successes,
    with_vanished,
)
from watcher.phases.tracker import GroupTrack, OpenPhase, _member, key_of, step
from watcher.poll.poller import PollResult
from watcher.pueue.model import Group, Result, Snapshot, Status, Task
from watcher.records import CleanRecord
from watcher.remote.clean import clean_argv
from watcher.remote.remove import remove_argv
from watcher.remote.shell import ARGUMENTS_BUDGET
from watcher.schedule import next_interval

NOW = datetime(2026, 3, 1, tzinfo=UTC)
SETTINGS = WatcherSection(poll_interval=300, fast_interval=5)


def t(
    i: int, status: Status, result: Result | None = None, group: str = "g", end_ago: float | None = None
) -> Task:
    end = None if end_ago is None else NOW - timedelta(seconds=end_ago)
    return Task.of(i, NOW - timedelta(days=1), group, f"t{i}", status, result, None, None, end)


def snap(*tasks: Task, status: str = "Running", parallel: int = 2) -> Snapshot:
    groups = {task.group: Group(task.group, status, parallel) for task in tasks} or {
        "g": Group("g", status, 2)
    }
    return Snapshot(groups=groups, tasks=tuple(tasks))


def test_normal_interval_while_tasks_wait() -> None:
    s = snap(t(0, Status.RUNNING), t(1, Status.RUNNING), t(2, Status.QUEUED))
    assert next_interval(s, SETTINGS, NOW) == 300


def test_fast_interval_in_the_last_wave() -> None:
    """Nothing waits to start any more: the group can complete at any moment."""
    s = snap(t(0, Status.DONE, Result.SUCCESS, end_ago=4000), t(1, Status.RUNNING))
    assert next_interval(s, SETTINGS, NOW) == 5


def test_fast_interval_when_the_eta_is_shorter_than_the_interval() -> None:
    done = [t(i, Status.DONE, Result.SUCCESS, end_ago=10 * i) for i in range(1, 30)]
    s = snap(*done, t(100, Status.RUNNING), t(101, Status.RUNNING), t(102, Status.QUEUED))
    assert next_interval(s, SETTINGS, NOW) == 5


def test_paused_and_finished_groups_do_not_speed_up() -> None:
    assert next_interval(snap(t(0, Status.RUNNING), status="Paused"), SETTINGS, NOW) == 300
    assert next_interval(snap(t(0, Status.DONE, Result.SUCCESS, end_ago=5)), SETTINGS, NOW) == 300
    off = WatcherSection(poll_interval=300, fast_interval=0)
    assert next_interval(snap(t(0, Status.RUNNING)), off, NOW) == 300


def result_of(snapshot: Snapshot, size: int) -> PollResult:
    return PollResult("h", NOW, 0.1, snapshot=snapshot, state_file_bytes=size)


def test_hygiene_plans_only_recorded_complete_groups() -> None:
    """Complete and recorded (no open phase): cleaned. Unfinished, or not yet on record: untouched."""
    s = snap(
        t(0, Status.DONE, Result.SUCCESS, group="done"),
        t(1, Status.DONE, Result.FAILED, group="done"),
        t(2, Status.DONE, Result.SUCCESS, group="busy"),
        t(3, Status.RUNNING, group="busy"),
        t(4, Status.DONE, Result.SUCCESS, group="unrecorded"),
    )
    tracks = {
        "done": GroupTrack(),
        "busy": GroupTrack(),
        "unrecorded": GroupTrack(phase=OpenPhase("x", 0, {})),
    }
    plan = Hygiene(HygieneSection(max_state_bytes=1000)).plan("h", result_of(s, 5000), tracks, NOW)
    assert plan is not None
    assert plan.groups == ["done"]
    assert plan.mode == "successful"
    assert plan.removed == {"done": {"success": 1}}
    assert plan.failed_labels == {}
    everything = Hygiene(HygieneSection(max_state_bytes=1000, clean="all")).plan(
        "h", result_of(s, 5000), tracks, NOW
    )
    assert everything is not None
    assert everything.removed == {"done": {"success": 1, "failed": 1}}
    assert everything.failed_labels == {"done": ["t1"]}


def test_hygiene_below_threshold_or_off_does_nothing() -> None:
    s = snap(t(0, Status.DONE, Result.SUCCESS))
    tracks = {"g": GroupTrack()}
    assert Hygiene(HygieneSection(max_state_bytes=1000)).plan("h", result_of(s, 999), tracks, NOW) is None
    assert (
        Hygiene(HygieneSection(max_state_bytes=1000, clean="off")).plan("h", result_of(s, 9999), tracks, NOW)
        is None
    )


def running_and_done() -> tuple[Snapshot, dict[str, GroupTrack]]:
    s = snap(
        t(0, Status.DONE, Result.SUCCESS, group="done"),
        t(1, Status.DONE, Result.FAILED, group="done"),
        t(2, Status.DONE, Result.SUCCESS, group="busy"),
        t(3, Status.DONE, Result.FAILED, group="busy"),
        t(4, Status.RUNNING, group="busy"),
    )
    busy = GroupTrack(phase=OpenPhase("p", 0, {key_of(x): _member(x) for x in s.group_tasks("busy")}))
    return s, {"done": GroupTrack(), "busy": busy}


def test_hygiene_cleans_the_whole_host_when_every_group_is_recorded_or_tracked() -> None:
    """A complete recorded group and a running tracked one: one whole-host clean -s, which names no group and
    removes the successful tasks of both (the running group's stay in its open phase)."""
    s, tracks = running_and_done()
    plan = Hygiene(HygieneSection(max_state_bytes=1000)).plan("h", result_of(s, 5000), tracks, NOW)
    assert plan is not None
    assert (plan.scope, plan.groups) == ("host", ["busy", "done"])
    assert plan.removed == {"busy": {"success": 1}, "done": {"success": 1}}
    assert per_group(plan) == []
    assert clean_argv(HostConfig(name="h"), per_group(plan), plan.mode, whole_host=True)[4:6] == [
        "pueue",
        "host",
    ]


def test_clean_all_names_only_complete_recorded_groups_for_their_failed_tasks() -> None:
    """``clean = "all"``: the failed task of the running group stays; the complete group's goes, by name."""
    s, tracks = running_and_done()
    plan = Hygiene(HygieneSection(max_state_bytes=1000, clean="all")).plan(
        "h", result_of(s, 5000), tracks, NOW
    )
    assert plan is not None and plan.scope == "host"
    assert plan.removed == {"busy": {"success": 1}, "done": {"success": 1, "failed": 1}}
    assert per_group(plan) == ["done"]


def test_a_group_that_must_keep_its_tasks_falls_back_to_per_group_cleans() -> None:
    """A blocked group (a check did not pass), or a host watched only in part: no whole-host clean."""
    s, tracks = running_and_done()
    hygiene = Hygiene(HygieneSection(max_state_bytes=1000))
    blocked = hygiene.plan("h", result_of(s, 5000), tracks, NOW, blocked={"busy"})
    assert blocked is not None and (blocked.scope, blocked.groups) == ("groups", ["done"])
    partial_view = hygiene.plan("h", result_of(s, 5000), tracks, NOW, whole_host=False)
    assert partial_view is not None and (partial_view.scope, partial_view.groups) == ("groups", ["done"])


def test_nothing_to_remove_plans_no_clean() -> None:
    """Above the threshold with only failed tasks and clean -s: no clean that would hold pueue's lock for
    nothing."""
    s = snap(t(0, Status.DONE, Result.FAILED))
    assert (
        Hygiene(HygieneSection(max_state_bytes=1)).plan("h", result_of(s, 5000), {"g": GroupTrack()}, NOW)
        is None
    )


def test_a_task_seen_running_that_vanishes_across_a_host_clean_succeeded() -> None:
    """After a whole-host clean -s, a task last seen unfinished and gone now is stepped through as a success,
    so its phase completes instead of counting it removed (or being abandoned)."""
    s, tracks = running_and_done()
    plan = Hygiene(HygieneSection(max_state_bytes=1000)).plan("h", result_of(s, 5000), tracks, NOW)
    assert plan is not None
    after = snap(t(3, Status.DONE, Result.FAILED, group="busy"))  # 2 cleaned; 4 succeeded, then cleaned
    found = vanished_successes(plan, tracks, after, NOW)
    assert [(x.id, x.state, x.end) for x in found["busy"]] == [(4, "success", NOW)]
    track = tracks["busy"]
    stepped = step(track, "h", "busy", after.group_tasks("busy") + tuple(found["busy"]), NOW)
    [record] = stepped.completed
    assert record.counts == {"success": 2, "failed": 1}
    assert vanished_successes(replace(plan, scope="groups"), tracks, after, NOW) == {}


def test_settled_records_what_was_kept_as_partial() -> None:
    """What the plan meant to remove and is still there after: a partial clean, with the reason."""
    s, tracks = running_and_done()
    plan = Hygiene(HygieneSection(max_state_bytes=1000)).plan("h", result_of(s, 5000), tracks, NOW)
    assert plan is not None
    planned = targets(plan, s)
    kept = settled(
        plan, planned, result_of(snap(t(0, Status.DONE, Result.SUCCESS, group="done")), 900), seconds=1
    )
    assert (kept.partial, kept.kept, kept.bytes_after) == (True, {"done": 1}, 900)
    assert kept.note is not None and "depend" in kept.note
    complete = settled(plan, planned, result_of(snap(t(4, Status.RUNNING, group="busy")), 500), seconds=1)
    assert (complete.partial, complete.kept, complete.note) == (False, {}, None)
    expired = settled(plan, planned, result_of(s, 5000), seconds=600, expired="command timed out after 600s")
    assert expired.partial and expired.note is not None and "budget" in expired.note


def test_a_chunk_keeps_pueueds_lock_short_and_its_arguments_within_budget() -> None:
    """A chunk holds k ids with k x tasks <= CHUNK_PAIRS (943 at 53,000 tasks, more as the host shrinks), at
    least one, and never more than one remote command's argument budget."""
    ids = [f"{i}=2026-03-01T00:00:00" for i in range(60_000)]
    first = next_chunk(ids, 0, 53_000)
    assert len(first) == CHUNK_PAIRS // 53_000 == 943 and first[0] == ids[0]
    assert len(first) * 53_000 <= CHUNK_PAIRS
    assert next_chunk(ids, 943, 53_000 - 943)[0] == ids[943]
    assert len(next_chunk(ids, 0, 20_000)) == 2_500
    assert len(next_chunk(ids, 0, 10**12)) == 1
    few = next_chunk(ids, 0, 1_000)  # 50,000 allowed by the lock: the arguments are the limit
    assert 1_000 < len(few) < 50_000
    assert sum(len(a) + 1 for a in few) <= ARGUMENTS_BUDGET
    assert len(" ".join(remove_argv(HostConfig(name="h"), few)).encode()) < 128 * 1024
    assert next_chunk(ids[:10], 8, 53_000) == ids[8:10]


def large_host() -> tuple[Snapshot, dict[str, GroupTrack]]:
    """Complete recorded groups (one Running, one Paused, one with a failed task), one still running."""
    tasks = [
        t(0, Status.DONE, Result.SUCCESS, group="done"),
        t(1, Status.DONE, Result.SUCCESS, group="done"),
        t(2, Status.DONE, Result.FAILED, group="done"),
        t(3, Status.DONE, Result.SUCCESS, group="paused"),
        t(4, Status.DONE, Result.SUCCESS, group="busy"),
        t(5, Status.RUNNING, group="busy"),
    ]
    s = snap(*tasks)
    groups = dict(s.groups) | {"paused": Group("paused", "Paused", 1)}
    busy = GroupTrack(phase=OpenPhase("p", 0, {key_of(x): _member(x) for x in s.group_tasks("busy")}))
    tracks = {"done": GroupTrack(), "paused": GroupTrack(), "busy": busy}
    return Snapshot(groups=groups, tasks=s.tasks), tracks


def large(snapshot: Snapshot, tasks: int) -> PollResult:
    return PollResult("h", NOW, 0.1, snapshot=snapshot, state_file_bytes=70_000_000, file_done=tasks - 1,
                      file_tasks=tasks)  # fmt: skip


def test_a_large_host_is_cleaned_in_bulk_from_complete_running_groups_only() -> None:
    """Past BULK_ABOVE_TASKS: scope "bulk", the successful tasks of complete, recorded, not Paused groups,
    by id with their created_at; no failed task, no group named, and the ids are not in the record."""
    s, tracks = large_host()
    hygiene = Hygiene(HygieneSection(max_state_bytes=1000, clean="all"))
    plan = hygiene.plan("h", large(s, BULK_ABOVE_TASKS + 1), tracks, NOW)
    assert plan is not None
    assert (plan.scope, plan.groups, plan.removed) == ("bulk", ["done"], {"done": {"success": 2}})
    assert plan.failed_labels == {} and per_group(plan) == []
    # On a whole second: also the second before (pueue's …:59.9999996 reads as …:00.000000 once rounded).
    assert candidates(plan, s) == [
        "0=2026-02-28T00:00:00", "0=2026-02-27T23:59:59", "1=2026-02-28T00:00:00", "1=2026-02-27T23:59:59"
    ]  # fmt: skip
    assert targets(plan, s) == frozenset({key_of(s.tasks[0]), key_of(s.tasks[1])})
    assert b"2026-02-28T00:00:00" not in msgspec.json.encode(plan)
    assert vanished_successes(plan, tracks, snap(t(5, Status.RUNNING, group="busy")), NOW) == {}
    small = hygiene.plan("h", large(s, BULK_ABOVE_TASKS), tracks, NOW)
    assert small is not None and small.scope == "host"


def test_a_bulk_candidate_carries_created_at_in_the_offset_pueue_wrote() -> None:
    """The state file spells created_at in its own offset: the candidate uses that wall-clock time."""
    local = datetime(2026, 3, 1, 1, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    task = Task.of(7, local, "g", None, Status.DONE, Result.SUCCESS, 0, None, None)
    s = Snapshot(groups={"g": Group("g", "Running", 1)}, tasks=(task,))
    plan = Hygiene(HygieneSection(max_state_bytes=1)).plan("h", large(s, 20_000), {"g": GroupTrack()}, NOW)
    assert plan is not None and plan.scope == "bulk"
    assert candidates(plan, s) == ["7=2026-03-01T01:30:05"]


def test_no_bulk_candidates_fall_back_to_the_regular_plan() -> None:
    """A large host whose only complete group is Paused, or blocked: the regular (host or groups) plan."""
    s, tracks = large_host()
    hygiene = Hygiene(HygieneSection(max_state_bytes=1000))
    plan = hygiene.plan("h", large(s, 20_000), tracks, NOW, blocked={"done"})
    assert plan is not None and plan.scope == "groups" and plan.groups == ["paused"]
    unwatched = hygiene.plan("h", large(s, 20_000), tracks, NOW, whole_host=False)
    assert unwatched is not None and unwatched.scope == "bulk"


def test_the_guard_travels_as_the_plans_done_count() -> None:
    """clean_argv passes the plan's Done count ($7) beside the fingerprint ($4); '' when unknown."""
    host = HostConfig(name="h")
    assert clean_argv(host, [], "successful", "1 2 3", whole_host=True, done=41)[4:11] == [
        "pueue", "host", "", "1 2 3", "", "", "41"
    ]  # fmt: skip
    assert clean_argv(host, ["g"], "successful")[10:] == ["", "g"]


def test_a_completed_bulk_is_followed_by_the_regular_plan_of_the_rest() -> None:
    """After a bulk that went through, the next plan takes the rest (a Paused group's successes) whatever the
    size and the cooldown, with a whole-host clean, never a second bulk; a bulk cut short is not followed."""
    s, tracks = large_host()
    hygiene = Hygiene(HygieneSection(max_state_bytes=10**9, cooldown=3600))
    assert hygiene.plan("h", large(s, 20_000), tracks, NOW) is None
    plan = hygiene.plan("h", large(s, 20_000), tracks, NOW, follow_up=True)
    assert plan is not None and plan.scope == "host" and "paused" in plan.groups
    bulk = replace(plan, scope="bulk", bytes_after=5000)
    assert completed_bulk(bulk) and completed_bulk(replace(bulk, partial=True, note="pueue kept 1 task(s)"))
    assert not completed_bulk(plan) and not completed_bulk(replace(bulk, deferred=True))
    assert not completed_bulk(replace(bulk, partial=True, note="the budget ran out (…)"))


class _Flood(bytearray):
    """A reply that must never be scanned or decoded whole, only through a slice (a plain bytearray)."""

    def __contains__(self, _: object) -> bool:
        raise AssertionError("the whole reply was scanned")

    def decode(self, *_: object, **__: object) -> str:
        raise AssertionError("the whole reply was decoded")


async def test_hygiene_reads_only_the_head_of_a_flooded_reply() -> None:
    """A bulk chunk's reply that carries 64 MiB after the script's own line is read from its head only."""
    from tests.harness.fake_transport import FakeTransport
    from watcher.config import HostConfig, HygieneSection
    from watcher.hygiene import Hygiene
    from watcher.transport.base import CommandResult

    host = HostConfig(name="h")
    matched = _Flood(b"pueue-watcher-bulk-matched 1\n" + b"\xff\n" * (32 << 20))
    unavailable = _Flood(b"pueue-watcher-bulk-unavailable state file state.json.gz\n" + b"x" * (64 << 20))
    hygiene = Hygiene(HygieneSection())
    candidate = ["1=2025-01-01T00:00:00"]
    assert await hygiene._bulk(host, FakeTransport([CommandResult(0, matched, b"")]), 5, candidate, 1)
    assert not await hygiene._bulk(host, FakeTransport([CommandResult(0, unavailable, b"")]), 5, candidate, 1)
    assert hygiene._no_bulk == {"h"}


def test_the_record_names_the_successes_a_whole_host_clean_took_unplanned() -> None:
    """A task that succeeded in the moment before pueued took the clean went with it: the record says so."""
    record = CleanRecord(host="h", at=datetime(2026, 1, 1, tzinfo=UTC), groups=["a"], mode="successful",
                         dry_run=False, bytes_before=10, bytes_after=2, removed={"a": {"success": 3}},
                         failed_labels={}, scope="host")  # fmt: skip
    merged = with_vanished(record, {"a": 1, "*bold*": 1})
    assert merged.groups == ["*bold*", "a"]
    assert merged.removed == {"a": {"success": 4}, "*bold*": {"success": 1}}
    assert with_vanished(record, {}) is record
