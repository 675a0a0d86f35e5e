"""Group progress (counts, remaining, ETA) and the status renderers, on the fixture scenario."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from watcher.poll.poller import PollResult
from watcher.progress import progress
from watcher.pueue.model import COUNT_KEYS, Group, Snapshot, Status, Task
from watcher.pueue.parse import parse_status
from watcher.render import clean, human_duration, status_document, status_table

NOW = datetime(2025, 6, 10, 14, 0, tzinfo=UTC)


def test_progress_of_the_fixture(fixtures_dir: Path) -> None:
    snapshot = parse_status((fixtures_dir / "v4_status.json").read_bytes())
    by_name = {g.name: g for g in progress(snapshot, NOW)}
    assert list(by_name) == ["btc-yearly", "default", "p1"]
    default = by_name["default"]
    assert (default.total, default.finished, default.remaining, default.failed) == (6, 3, 3, 2)
    assert by_name["p1"].eta_seconds is None  # paused: no ETA
    assert by_name["btc-yearly"].remaining == 2


def _task(i: int, end: datetime | None, status: Status = Status.DONE) -> Task:
    from watcher.pueue.model import Result

    return Task.of(
        i, NOW - timedelta(days=1), "g", None, status, Result.SUCCESS if end else None, None, None, end
    )


def test_eta_from_the_recent_rate() -> None:
    """Six tasks finished in the last 30 minutes (one per 5 min) and 12 remain: about an hour left."""
    done = [_task(i, NOW - timedelta(minutes=5 * i)) for i in range(1, 7)]
    left = [_task(100 + i, None, Status.QUEUED) for i in range(12)]
    snapshot = Snapshot(groups={"g": Group("g", "Running", 2)}, tasks=tuple(done + left))
    (group,) = progress(snapshot, NOW)
    assert group.eta_seconds is not None
    assert 3500 < group.eta_seconds < 3700


def test_eta_falls_back_to_the_last_completions() -> None:
    """Nothing finished in the last hour: the rate comes from the last completions, wherever they are."""
    done = [_task(i, NOW - timedelta(hours=5, minutes=10 * i)) for i in range(3)]
    left = [_task(100, None, Status.RUNNING)]
    (group,) = progress(Snapshot(groups={"g": Group("g", "Running", 1)}, tasks=tuple(done + left)), NOW)
    assert group.eta_seconds == 600


def test_json_contract_has_every_key(fixtures_dir: Path) -> None:
    snapshot = parse_status((fixtures_dir / "v3_status.json").read_bytes())
    ok = PollResult("a", NOW, 0.1, snapshot=snapshot, state_file_bytes=1234)
    bad = PollResult("b", NOW, 0.1, error="b:22: connection refused", reason="unreachable")
    document = json.loads(json.dumps(status_document([ok, bad], NOW)))
    a, b = document["hosts"]
    assert set(a) >= {"name", "ok", "error", "state_file_bytes", "groups"}
    assert (a["ok"], a["error"], a["state_file_bytes"]) == (True, None, 1234)
    for group in a["groups"]:
        assert set(group) >= {"name", "status", "parallel", "tasks"}
        assert list(group["tasks"]) == list(COUNT_KEYS)
    assert (b["ok"], b["error"], b["groups"]) == (False, "b:22: connection refused", [])


def test_table_shows_groups_and_errors(fixtures_dir: Path) -> None:
    snapshot = parse_status((fixtures_dir / "v4_status.json").read_bytes())
    ok = PollResult("bigblack", NOW, 0.1, snapshot=snapshot, state_file_bytes=76_200_000)
    bad = PollResult("small", NOW, 0.1, error="small: connection refused", reason="unreachable")
    text = status_table([ok, bad], NOW)
    assert "btc-yearly" in text
    assert "Paused" in text
    assert "state file: 76.2 MB" in text
    assert "UNREACHABLE" in text
    assert "error: small: connection refused" in text


def test_terminal_output_is_sanitised() -> None:
    """Remote text cannot move the cursor or recolour the terminal."""
    assert clean("evil\x1b[2J\x1b[31mred\nnext") == "evil?[2J?[31mred?next"
    assert len(clean("x" * 500, 40)) == 40


def test_human_duration() -> None:
    assert [human_duration(s) for s in (5, 65, 3700, 90000)] == ["5s", "1m05s", "1h01m", "1d01h"]
