"""Per-host limits (issue 13, M1): how many groups, how long their names, how many phase alerts an hour; the
series of removed groups pruned; the outbox fair between hosts; the event loop's lag exported.

Fast tier: a scripted transport stands in for the host. tests/faults/test_hostile_fleet.py runs the same
hostile queues through a real sshd and the real daemon.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from tests.harness import state_db
from tests.harness.fake_transport import FakeTransport
from watcher.config import HostConfig, settings_from_mapping
from watcher.daemon import Daemon
from watcher.metrics import MetricsState, build_registry
from watcher.metrics.loop_lag import LoopLag
from watcher.phases.flood import AlertBudget
from watcher.poll.poller import HostPoller, PollResult
from watcher.poll.select import Dropped, select_groups
from watcher.pueue.model import Group, Snapshot
from watcher.records import Event
from watcher.remote.poll import MARKER
from watcher.sanitize import LABEL_MAX
from watcher.store import Store
from watcher.transport.base import CommandResult

T0 = "2026-12-01T00:00:00Z"


def task(tid: int, group: str, status: str) -> dict[str, Any]:
    if status == "Done":
        state: Any = {"Done": {"enqueued_at": T0, "start": T0, "end": T0, "result": "Success"}}
    elif status == "Running":
        state = {"Running": {"enqueued_at": T0, "start": T0}}
    else:
        state = {"Queued": {"enqueued_at": T0}}
    return {"id": tid, "created_at": T0, "original_command": "x", "command": "x", "path": "/", "envs": {},
            "group": group, "dependencies": [], "priority": 0, "label": None, "status": state}  # fmt: skip


def state_doc(groups: dict[str, str]) -> bytes:
    """A pueue 4 status document: one task per group, in the given status."""
    return json.dumps(
        {
            "tasks": {str(i): task(i, g, s) for i, (g, s) in enumerate(groups.items())},
            "groups": {g: {"status": "Running", "parallel_tasks": 1} for g in groups},
        }
    ).encode()


def answer(doc: bytes, fingerprint: str) -> CommandResult:
    header = MARKER + f"file state.json {fingerprint}\ndaemon up\nstate none\n".encode()
    return CommandResult(0, header + doc, b"")


def snapshot(*names: str) -> Snapshot:
    return Snapshot(groups={n: Group(n, "Running", 1) for n in names}, tasks=())


def test_over_the_limit_tracked_groups_come_first_then_names() -> None:
    kept, dropped = select_groups(snapshot("d", "a", "c", "b", "z"), ["*"], max_groups=3, max_name=10,
                                  keep={"z", "gone"})  # fmt: skip
    assert sorted(kept.groups) == ["a", "b", "z"]
    assert (dropped.over_count, dropped.long_names, dropped.tracked) == (2, 0, frozenset())


def test_long_names_are_not_watched_and_a_left_out_tracked_group_is_named() -> None:
    long = "x" * 11
    kept, dropped = select_groups(snapshot("a", "b", "c", long), ["*"], max_groups=2, max_name=10,
                                  keep={"c", long})  # fmt: skip
    assert sorted(kept.groups) == ["a", "c"]
    assert (dropped.over_count, dropped.long_names, dropped.total) == (1, 1, 2)
    assert dropped.tracked == {long}  # a tracked group left out is not a removed group


def test_groups_outside_the_globs_are_neither_kept_nor_counted() -> None:
    kept, dropped = select_groups(snapshot("p1", "p2", "other"), ["p*"], max_groups=1, max_name=10,
                                  keep={"other"})  # fmt: skip
    assert list(kept.groups) == ["p1"]
    assert (dropped.over_count, dropped.tracked) == (1, frozenset())


async def test_a_host_with_hundreds_of_groups_keeps_the_limit() -> None:
    """900 groups: the poller keeps 50 (and their tasks only) and says how many it left out."""
    groups = {f"g{i:05d}": "Running" for i in range(899)} | {"y" * 300: "Running"}
    fake = FakeTransport([answer(state_doc(groups), "1 1.0 1")])
    poller = HostPoller(HostConfig(name="h"), fake, timeout=30, max_groups=50, max_group_name=256)
    result = await poller.poll()
    assert result.ok and result.snapshot is not None
    assert len(result.snapshot.groups) == 50
    assert {t.group for t in result.snapshot.tasks} == set(result.snapshot.groups)
    assert (result.dropped.over_count, result.dropped.long_names) == (849, 1)
    assert result.file_tasks == 900  # the whole file is still counted (hygiene's guard)


async def test_a_host_with_far_more_groups_than_it_may_have_is_not_read() -> None:
    """Over 20 times max_groups, the groups are not decoded at all: the poll fails with one line."""
    groups = {f"g{i:05d}": "Running" for i in range(1001)}
    fake = FakeTransport([answer(state_doc(groups), "1 1.0 1")])
    result = await HostPoller(HostConfig(name="h"), fake, timeout=30, max_groups=50).poll()
    assert result.reason == "parse"
    assert result.error is not None and result.error.startswith("the host lists over 1000 groups (")


async def run_polls(tmp_path: Path, docs: list[bytes], **watcher: Any) -> tuple[list[Event], Store, Daemon]:
    """The daemon's cycles of one host whose transport answers ``docs`` in turn; the events committed."""
    settings = settings_from_mapping({
        "watcher": {"state_path": str(tmp_path / "state.db"), **watcher},
        "metrics": {"listen": ""},
        "hygiene": {"clean": "off"},
        "hosts": [{"name": "h", "address": "127.0.0.1"}],
    })  # fmt: skip
    store = await Store.open(settings.watcher.state_path)
    daemon = Daemon(settings, store)
    watch = daemon.watches[0]
    watch.poller.transport = FakeTransport([answer(d, f"{i} 1.0 1") for i, d in enumerate(docs, 1)])
    for _ in docs:
        await watch.cycle(clean=False)
    return state_db.events(store.path), store, daemon


async def test_a_flood_of_completions_beyond_the_budget_is_folded_into_one_alert(tmp_path: Path) -> None:
    """30 groups complete in one poll with a budget of 5 alerts an hour: 5 phase.completed events, one
    phase.flood for the other 25, and all 30 phases in history."""
    names = [f"g{i:02d}" for i in range(30)]
    docs = [state_doc(dict.fromkeys(names, "Running")), state_doc(dict.fromkeys(names, "Done"))]
    events, store, daemon = await run_polls(tmp_path, docs, max_phase_alerts_per_hour=5)
    try:
        kinds = [e.event for e in events]
        assert kinds.count("phase.completed") == 5
        (flood,) = [e for e in events if e.event == "phase.flood"]
        assert flood.data["phases"] == 25 and flood.data["outcomes"] == {"success": 25}
        assert len(flood.data["groups"]) == 10 and "15 more" in flood.data["summary"]
        phases = await store.phases(host="h")
        assert len([p for p in phases if p.status == "completed"]) == 30
    finally:
        await daemon.close()
        await store.close()


def test_the_budget_refills_over_the_hour() -> None:
    budget, now = AlertBudget(60), datetime(2026, 12, 1, tzinfo=UTC)
    assert budget.take(100, now) == 60
    assert budget.take(1, now) == 0
    assert budget.take(100, now + timedelta(minutes=10)) == 10
    assert budget.take(100, now + timedelta(hours=5)) == 60  # never more than an hour's worth


async def test_a_tracked_group_outside_a_lowered_limit_keeps_its_track(tmp_path: Path) -> None:
    """A group tracked with an open phase, then left out when the limit is lowered, is not taken for
    removed: no completion is made up for it, and its track is still there."""
    docs = [state_doc({"a": "Running", "b": "Running"})]
    _, store, daemon = await run_polls(tmp_path, docs)
    await daemon.close()
    later = [state_doc({"a": "Running", "b": "Running", "0first": "Running"})]
    events, store2, daemon2 = await run_polls(tmp_path, later, max_groups=2)
    try:
        assert not [e for e in events if e.event in ("phase.completed", "phase.flood")]
        assert set(await store2.load_tracks("h")) >= {"a", "b"}
    finally:
        await daemon2.close()
        await store2.close()
        await store.close()


def scrape(state: MetricsState) -> str:
    return generate_latest(build_registry(state)).decode()


def poll_of(*names: str, dropped: Any = None) -> PollResult:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    extra = {} if dropped is None else {"dropped": dropped}
    return PollResult("h", at, 0.1, snapshot=snapshot(*names), source="state", **extra)


def test_the_series_of_a_removed_group_are_pruned() -> None:
    state = MetricsState()
    state.set_hosts(["h"])
    state.observe_poll(poll_of("keep", "gone"), datetime.now(UTC))
    state.phase_completed("h", "gone", "success", datetime.now(UTC))
    state.check_result("h", "gone", "dupes", "ok", 0)
    assert 'group="gone"' in scrape(state)
    state.observe_poll(poll_of("keep"), datetime.now(UTC))
    text = scrape(state)
    assert 'group="gone"' not in text
    assert 'pueue_phase_completions_total{group="keep",host="h",outcome="success"} 0.0' in text


def test_long_group_names_become_bounded_labels_and_drops_are_exported() -> None:
    state = MetricsState()
    state.set_hosts(["h"])
    long_a, long_b = "a" * 200 + "1", "a" * 200 + "2"
    state.observe_poll(poll_of(long_a, long_b, dropped=Dropped(3, 4)), datetime.now(UTC))
    text = scrape(state)
    labels = {line.split('group="')[1].split('"')[0] for line in text.splitlines() if 'group="' in line}
    assert len(labels) == 2 and all(len(v) <= LABEL_MAX for v in labels)
    assert 'pueue_watcher_groups_dropped{host="h",reason="count"} 3.0' in text
    assert 'pueue_watcher_groups_dropped{host="h",reason="name_length"} 4.0' in text
    assert "pueue_watcher_event_loop_lag_max_seconds 0.0" in text


def test_the_loop_lag_probe_keeps_the_worst_of_the_last_minute_and_of_all_time() -> None:
    lag = LoopLag()
    lag.observe(0.3, now=0.0)
    lag.observe(0.1, now=10.0)
    assert (lag.recent_seconds, lag.max_seconds) == (0.3, 0.3)
    lag.observe(0.05, now=61.0)
    assert (lag.recent_seconds, lag.max_seconds) == (0.1, 0.3)
    lag.observe(0.0, now=200.0)
    assert lag.recent_seconds == 0.0


async def test_the_loop_lag_probe_sees_a_blocked_loop() -> None:
    lag, stop = LoopLag(), asyncio.Event()
    probe = asyncio.create_task(lag.run(stop))
    await asyncio.sleep(0.1)
    time.sleep(0.3)  # noqa: ASYNC251 -- holding the loop is the point
    await asyncio.sleep(0.1)
    stop.set()
    await probe
    assert lag.max_seconds >= 0.2


async def test_a_flooding_host_does_not_hold_back_another_hosts_alert(tmp_path: Path) -> None:
    """300 events of one host, then one of another: the other's event is in the sink's first batch."""
    store = await Store.open(tmp_path / "s.db")
    try:
        at = datetime(2026, 12, 1, tzinfo=UTC)
        flood = [Event(id=f"e{i}", event="host.up", host="noisy", group=None, at=at, data={})
                 for i in range(300)]  # fmt: skip
        quiet = Event(id="q", event="host.up", host="quiet", group=None, at=at, data={})
        await store.commit("noisy", events=flood)
        await store.commit("quiet", events=[quiet])
        await store.dispatch({e.id: ["ops"] for e in [*flood, quiet]})
        batch = await store.pending_deliveries("ops", 50)
        assert "q" in [e.id for e in batch]
        assert [e.id for e in batch if e.host == "noisy"] == [f"e{i}" for i in range(49)]  # in order
    finally:
        await store.close()


async def test_a_megabyte_task_label_is_cut_in_the_phase_record(tmp_path: Path) -> None:
    """A failed task's label is the host's text: the phase record (store, events) keeps 200 characters."""
    running = json.loads(state_doc({"p1": "Running"}))
    done = json.loads(state_doc({"p1": "Done"}))
    failed = done["tasks"]["0"]
    failed["label"] = "L" * (1 << 20)
    failed["status"]["Done"]["result"] = {"Failed": 1}
    docs = [json.dumps(running).encode(), json.dumps(done).encode()]
    events, store, daemon = await run_polls(tmp_path, docs)
    try:
        (completed,) = [e for e in events if e.event == "phase.completed"]
        (label,) = completed.data["failed_labels"]
        assert len(label) == 200 and label.endswith("…")
    finally:
        await daemon.close()
        await store.close()
