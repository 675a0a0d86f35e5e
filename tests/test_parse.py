"""The pueue JSON parser: both fixture versions, every status and result, and hostile input."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import examples
from watcher.errors import PueueParseError
from watcher.pueue import parse
from watcher.pueue.model import COUNT_KEYS, Result, Snapshot, Status, count_states
from watcher.pueue.parse import decode_status, parse_groups, parse_status, snapshot_of
from watcher.remote.payload import read_local_state, release

EXPECTED_STATES = {
    0: "success",
    1: "failed",
    2: "dependency_failed",
    3: "running",
    4: "queued",
    5: "locked",
    6: "paused",
    7: "stashed",
    8: "success",
    9: "killed",
    10: "errored",
    11: "failed_to_spawn",
    12: "running",
    13: "stashed",
}


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_every_status_and_result_of_the_fixture(fixtures_dir: Path, version: str) -> None:
    """Each task of the fixture scenario gets the state the README's table gives it, in both versions."""
    snapshot = parse_status((fixtures_dir / f"{version}_status.json").read_bytes())
    assert snapshot.format == version
    assert {t.id: t.state for t in snapshot.tasks} == EXPECTED_STATES
    assert {t.status for t in snapshot.tasks} == set(Status)
    assert {t.result for t in snapshot.tasks} - {None} == set(Result)
    failed = next(t for t in snapshot.tasks if t.id == 1)
    assert failed.exit_code == 1
    assert failed.start is not None and failed.end is not None and failed.end > failed.start
    assert {n: (g.status, g.parallel) for n, g in snapshot.groups.items()} == {
        "btc-yearly": ("Running", 3),
        "default": ("Running", 1),
        "p1": ("Paused", 2),
    }
    assert snapshot.group_tasks("p1")[0].label == "encode-0612"
    assert count_states(snapshot.group_tasks("btc-yearly")) == dict.fromkeys(COUNT_KEYS, 0) | {
        "success": 1,
        "killed": 1,
        "errored": 1,
        "failed_to_spawn": 1,
        "running": 1,
        "stashed": 1,
    }


def test_v3_and_v4_describe_the_same_instants(fixtures_dir: Path) -> None:
    """The two versions carry the same scenario; v4 times live inside the status object."""
    v3 = parse_status((fixtures_dir / "v3_status.json").read_bytes())
    v4 = parse_status((fixtures_dir / "v4_status.json").read_bytes())
    assert [t.state for t in v3.tasks] == [t.state for t in v4.tasks]
    assert all(t.start is not None for t in v4.tasks if t.status is Status.DONE)


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_group_json(fixtures_dir: Path, version: str) -> None:
    """`pueue group --json` is the bare groups map."""
    groups = parse_groups((fixtures_dir / f"{version}_group.json").read_bytes())
    assert groups["p1"].status == "Paused" and groups["btc-yearly"].parallel == 3


def test_envs_are_never_kept(fixtures_dir: Path) -> None:
    """Secrets in `envs` (and commands) do not survive parsing: nothing in the model holds them."""
    raw = json.loads((fixtures_dir / "v4_status.json").read_text())
    raw["tasks"]["0"]["envs"]["API_TOKEN"] = "s3cr3t-token-value"
    raw["tasks"]["0"]["command"] = "curl -H 'Authorization: hunter2'"
    snapshot = parse_status(json.dumps(raw).encode())
    dump = repr(snapshot)
    assert "s3cr3t-token-value" not in dump and "hunter2" not in dump and "PATH" not in dump


def test_unknown_fields_are_tolerated(fixtures_dir: Path) -> None:
    """Pre-3.0 state files have a top-level `settings`; future pueue may add task fields."""
    raw = json.loads((fixtures_dir / "v3_status.json").read_text())
    raw["settings"] = {"client": {}}
    raw["tasks"]["0"]["new_field"] = [1, 2]
    assert len(parse_status(json.dumps(raw).encode()).tasks) == 14


def test_pre_3_group_shape() -> None:
    """pueue < 3.0 wrote each group as a bare status string."""
    snapshot = parse_status(b'{"tasks": {}, "groups": {"default": "Running"}}')
    assert snapshot.groups["default"].status == "Running" and snapshot.format == "unknown"


def test_unknown_status_names_the_task(fixtures_dir: Path) -> None:
    raw = json.loads((fixtures_dir / "v4_status.json").read_text())
    raw["tasks"]["7"]["status"] = {"Hibernating": {}}
    with pytest.raises(PueueParseError, match=r"task 7: unknown status 'Hibernating'"):
        parse_status(json.dumps(raw).encode())


def test_unknown_result_names_the_task(fixtures_dir: Path) -> None:
    raw = json.loads((fixtures_dir / "v3_status.json").read_text())
    raw["tasks"]["9"]["status"] = {"Done": "Vanished"}
    with pytest.raises(PueueParseError, match=r"task 9: unknown result 'Vanished'"):
        parse_status(json.dumps(raw).encode())


def test_wrong_type_names_the_task(fixtures_dir: Path) -> None:
    raw = json.loads((fixtures_dir / "v4_status.json").read_text())
    raw["tasks"]["3"]["id"] = "three"
    with pytest.raises(PueueParseError, match=r"task 3: Expected `int`, got `str` - at `\$.id`"):
        parse_status(json.dumps(raw).encode())


def test_truncation_names_the_byte_offset(fixtures_dir: Path) -> None:
    data = (fixtures_dir / "v4_status.json").read_bytes()
    with pytest.raises(PueueParseError, match=r"truncated at byte 5000"):
        parse_status(data[:5000])


def test_malformed_json_names_the_byte_offset() -> None:
    with pytest.raises(PueueParseError, match=r"byte 12"):
        parse_status(b'{"tasks": {}x, "groups": {}}')


# --- a mapped state file, decoded part by part (parse._decode_mapped) -------------------------------------


def parse_mapped(data: bytes, path: Path) -> tuple[Snapshot, bool]:
    """Parse ``data`` as the poller parses a local state file (mapped, decoded, released, then built); also
    whether it went part by part. release() raises BufferError if anything still held the mapping."""
    path.write_bytes(data)
    view = read_local_state(str(path))
    try:
        decoded = decode_status(view)
    finally:
        release(view)
    return snapshot_of(decoded), decoded.built is not None


def outcome(parser: Callable[[], Snapshot]) -> Snapshot | str:
    try:
        return parser()
    except PueueParseError as exc:
        return f"PueueParseError: {exc}"


def compact(doc: object) -> bytes:
    """JSON as pueue writes it: no spaces."""
    return json.dumps(doc, separators=(",", ":")).encode()


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of about 1 KB, so that a fixture of 14 tasks spans several."""
    monkeypatch.setattr(parse, "DROP_STEP", 1024)


@pytest.mark.usefixtures("small_parts")
@pytest.mark.parametrize("version", ["v3", "v4"])
def test_a_mapped_state_gives_the_snapshot_of_its_bytes(
    fixtures_dir: Path, tmp_path: Path, version: str
) -> None:
    """A mapped state decoded part by part gives the one-pass snapshot: tasks, order, groups and format."""
    data = (fixtures_dir / f"{version}_status.json").read_bytes()
    snapshot, in_parts = parse_mapped(data, tmp_path / "state.json")
    assert in_parts
    assert snapshot == parse_status(data) and snapshot.format == version
    assert [t.id for t in snapshot.tasks] == list(range(14))


def test_a_large_generated_state_parses_the_same_mapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generated 3,000-task v4 state, in parts of 256 KB, gives the same snapshot mapped and read."""
    from tests.pueue_sim.scenario import generate_state

    monkeypatch.setattr(parse, "DROP_STEP", 256 << 10)
    state = tmp_path / "state.json"
    generate_state(state, "v4", 3000, 7, seed=3)
    data = state.read_bytes()
    assert len(data) > 10 * parse.DROP_STEP
    snapshot, in_parts = parse_mapped(data, tmp_path / "copy.json")
    assert in_parts and snapshot == parse_status(data) and len(snapshot.tasks) == 3000


def _edited(fixtures_dir: Path, edit: Callable[[dict[str, Any]], None]) -> bytes:
    doc = json.loads((fixtures_dir / "v4_status.json").read_text())
    edit(doc)
    return compact(doc)


def _bad_status(doc: dict[str, Any]) -> None:
    doc["tasks"]["11"]["status"] = {"Hibernating": {}}


def _done_without_result(doc: dict[str, Any]) -> None:
    doc["tasks"]["12"]["status"] = "Done"


def _bad_group(doc: dict[str, Any]) -> None:
    doc["groups"]["p1"] = 5


def _spaced_group(doc: dict[str, Any]) -> None:
    doc["groups"]["tasks"] = doc["groups"].pop("p1")  # a key "tasks" after the tasks: left to the one pass


@pytest.mark.usefixtures("small_parts")
@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_bad_status, r"task 11: unknown status 'Hibernating'"),
        (_done_without_result, r"task 12: Done without a result"),
        (_bad_group, r"unexpected pueue JSON: .*groups"),
        (_spaced_group, None),
    ],
    ids=["unknown-status-late", "done-without-result", "bad-group", "group-named-tasks"],
)
def test_a_mapped_state_fails_as_its_bytes_do(
    fixtures_dir: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None], expected: str | None
) -> None:
    """A bad task in a late part, or a bad group, is the one-pass error, naming the task; the mapping is
    released all the same."""
    data = _edited(fixtures_dir, edit)
    mapped = outcome(lambda: parse_mapped(data, tmp_path / "state.json")[0])
    assert mapped == outcome(lambda: parse_status(data))
    if expected is not None:
        assert isinstance(mapped, str) and re.search(expected, mapped), mapped


def _v3_copy(data: bytes, key: str) -> dict[str, Any]:
    task: dict[str, Any] = json.loads(data)["tasks"][key]
    return task | {"start": None}


@pytest.mark.usefixtures("small_parts")
@pytest.mark.parametrize(
    "document",
    [
        # a task repeated in a later part, its first copy in v3's shape: the one pass keeps only the last
        lambda d: d.replace(b'{"tasks":{', b'{"tasks":{"13":' + compact(_v3_copy(d, "13")) + b",", 1),
        # a second top-level "tasks": the last one wins
        lambda d: d.rstrip()[:-1] + b',"tasks":{}}',
        # truncated in the middle of a late part
        lambda d: d[: len(d) - 3000],
        # spaces: not pueue's layout, decoded in one pass
        lambda d: json.dumps(json.loads(d)).encode(),
    ],
    ids=["repeated-task", "second-tasks", "truncated", "spaced"],
)
def test_unusual_mapped_documents_give_the_one_pass_answer(
    fixtures_dir: Path, tmp_path: Path, document: Callable[[bytes], bytes]
) -> None:
    """Documents pueue never writes give, mapped, exactly the one-pass snapshot or error."""
    data = document((fixtures_dir / "v4_status.json").read_bytes())
    mapped = outcome(lambda: parse_mapped(data, tmp_path / "state.json")[0])
    assert mapped == outcome(lambda: parse_status(data))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_arbitrary_json_raises_only_the_parse_error(value: object) -> None:
    """Whatever JSON arrives, the parser returns a snapshot or raises PueueParseError, nothing else."""
    try:
        parse_status(json.dumps(value).encode())
    except PueueParseError:
        pass


STATUS_VALUES = st.sampled_from(
    [
        "Queued",
        "Running",
        "Nope",
        3,
        None,
        {"Done": "Success"},
        {"Done": {"Failed": "x"}},
        {"Done": {"result": {}}},
        {"Done": {"result": "Killed", "end": 5}},
        {"Stashed": {"enqueue_at": None}},
        {"Locked": {"previous_status": 1}},
        {"Done": {"Failed": True}},
        {"Running": {"start": "not a time"}},
        {"A": 1, "B": 2},
        [],
        {},
    ]
)


@settings(max_examples=examples(300))
@given(status=STATUS_VALUES, created=st.sampled_from(["2025-01-01T00:00:00Z", "garbage", 5, None]))
def test_arbitrary_task_shapes_raise_only_the_parse_error(status: object, created: object) -> None:
    """Plausible but wrong task objects: only PueueParseError, and it names the task."""
    doc = {"tasks": {"4": {"id": 4, "created_at": created, "group": "g", "status": status}}, "groups": {}}
    try:
        parse_status(json.dumps(doc).encode())
    except PueueParseError as exc:
        message = str(exc)
    else:
        return
    assert "task 4" in message or "unexpected" in message


@settings(max_examples=examples(200))
@given(cut=st.integers(min_value=0), version=st.sampled_from(["v3", "v4"]))
def test_truncated_real_json_raises_only_the_parse_error(cut: int, version: str) -> None:
    """Real pueue output cut at any byte short of its closing brace is an error, never a partial snapshot."""
    data = (FIXTURE_DIR / f"{version}_status.json").read_bytes().rstrip()
    with pytest.raises(PueueParseError):
        parse_status(data[: cut % len(data)])


@settings(max_examples=examples(200))
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_the_parse_error(data: bytes) -> None:
    try:
        parse_status(data)
    except PueueParseError:
        pass


from tests.conftest import FIXTURES as FIXTURE_DIR  # noqa: E402  (hypothesis tests cannot take fixtures)
