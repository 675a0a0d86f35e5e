"""Hostile pueue JSON (issue 8, point 5): the parsers of what a host sends are fuzzed with hypothesis from
mutations of the real samples (``tests/fixtures/pueue``), and every parsed snapshot is pushed through what
consumes it (status output, the phase tracker, events, the Slack and webhook payloads): only the documented
errors may come out. ``tests/test_parse.py`` already covers arbitrary JSON and arbitrary bytes; these add
structure-aware mutations, invalid UTF-8 inside strings, timestamps at the edges, the mapped (local) read,
pathological documents, and the downstream consumers.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import FIXTURES
from tests.faults import hostile
from tests.faults.hostile_kit import FUZZ, STRINGS, TERMINAL_UNSAFE, assert_inert
from tests.faults.ledger import Ledger
from watcher.alerts import slack, webhook
from watcher.errors import PueueParseError
from watcher.events import phase_completed
from watcher.phases.tracker import GroupTrack, step
from watcher.poll.poller import PollResult
from watcher.pueue import parse
from watcher.pueue.parse import decode_status, parse_groups, snapshot_of
from watcher.remote.payload import read_local_state, release
from watcher.render import status_document, status_table

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)

SAMPLES = {version: json.loads((FIXTURES / f"{version}_status.json").read_text()) for version in ("v3", "v4")}
GROUP_SAMPLES = {
    version: json.loads((FIXTURES / f"{version}_group.json").read_text()) for version in ("v3", "v4")
}

TIMESTAMPS = st.sampled_from(
    [
        "2025-01-01T00:00:00Z",
        "2025-01-01T00:00:00",  # no offset: chrono never prints this
        "2025-01-01 00:00:00Z",
        "2025-01-01T00:00:00.123456789123Z",
        "2025-01-01T23:59:60Z",  # a leap second
        "2025-01-01T24:00:00Z",
        "2025-13-01T00:00:00Z",
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999Z",
        "+10000-01-01T00:00:00Z",
        "2025-01-01T00:00:00+25:00",
        "2025-01-01t00:00:00z",
        "",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | STRINGS
    | TIMESTAMPS
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(STRINGS, children, max_size=3),
    max_leaves=12,
)
STATUSES = st.sampled_from(
    [
        "Queued",
        "Running",
        "Locked",
        "Done",
        {"Done": "Success"},
        {"Done": {"Failed": 2**63}},
        {"Done": {"Failed": -1}},
        {"Done": {"FailedToSpawn": "\x1b[31m<!channel>"}},
        {"Done": {"result": {"Failed": 1}, "start": "0001-01-01T00:00:00+14:00", "end": None}},
        {"Done": {"result": "Killed", "start": "2025-01-01T00:00:00", "end": "2025-01-01T00:00:01"}},
        {"Running": {"enqueued_at": "2025-01-01T00:00:00Z", "start": "9999-12-31T23:59:59-14:00"}},
        {"Locked": {"previous_status": {"Locked": {"previous_status": "Queued"}}}},
        {"Stashed": {"enqueue_at": "2025-01-01T00:00:00+14:00"}},
        {"Paused": None},
        {"Done": None},
    ]
).map(copy.deepcopy)  # later edits may change it in place


TASK_FIELDS = ["id", "created_at", "group", "status", "label", "start", "end", "enqueued_at", "prev_status"]


def mutate(doc: Any, data: st.DataObject) -> Any:
    """One structural edit of ``doc``: replace, delete, add, retype or re-time a value, either of a field the
    parser reads (half the time) or anywhere."""
    path: list[Any] = []
    node = doc
    tasks = doc.get("tasks") if isinstance(doc, dict) else None
    if isinstance(tasks, dict) and tasks and data.draw(st.booleans(), label="task field"):
        key = data.draw(st.sampled_from(sorted(tasks)), label="task")
        if isinstance(tasks[key], dict):
            path = ["tasks", key, data.draw(st.sampled_from(TASK_FIELDS), label="field")]
            tasks[key].setdefault(path[-1], None)
            node = tasks[key][path[-1]]
    while isinstance(node, dict | list) and node and data.draw(st.booleans(), label="deeper"):
        key = data.draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        path.append(key)
        node = node[key]
    if not path:
        return data.draw(JSON, label="whole")
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    edit = data.draw(st.sampled_from(["replace", "delete", "add", "status", "time", "string", "number"]))
    if edit == "replace":
        parent[key] = data.draw(JSON)
    elif edit == "delete":
        del parent[key]
    elif edit == "add" and isinstance(parent, dict):
        parent[data.draw(STRINGS)] = data.draw(JSON)
    elif edit == "status":
        parent[key] = data.draw(STATUSES)
    elif edit == "time":
        parent[key] = data.draw(TIMESTAMPS)
    elif edit == "string":
        parent[key] = data.draw(STRINGS | st.just(hostile.one_megabyte("x")))
    else:
        parent[key] = data.draw(st.sampled_from([-1, 0, 2**64, 2**64 - 1, -(2**63), 10**30, 1e308, 0.5]))
    return doc


def consume(document: bytes) -> None:
    """Parse like the poller (decode, then build the snapshot), then feed everything that reads a snapshot:
    the status table and JSON, the phase tracker (and its persisted form), the completion events and their
    Slack and webhook payloads. Only PueueParseError may come out."""
    try:
        snapshot = snapshot_of(decode_status(document))
    except PueueParseError as exc:
        message = str(exc)
    else:
        message = None
    if message is not None:
        assert "\n" not in message and len(message) <= 300, message[:2000]
        return
    result = PollResult("h", NOW, 0.1, snapshot=snapshot, state_file_bytes=len(document))
    json.dumps(status_document([result], NOW))
    table = status_table([result], NOW)
    assert not TERMINAL_UNSAFE.search(table), repr(table[:300])
    for group in sorted(set(snapshot.groups) | set(snapshot.tasks_by_group)):
        track = GroupTrack()
        for first_sight in (False, True):
            stepped = step(track, "h", group, snapshot.group_tasks(group), NOW, first_sight=first_sight)
            track = GroupTrack.decode(track.encode())
            events = [phase_completed(record) for record in stepped.completed]
            assert_inert(slack.payload(events))
            webhook.body(events)


@FUZZ
@given(data=st.data(), version=st.sampled_from(["v3", "v4"]))
def test_mutated_real_samples_give_a_snapshot_or_the_parse_error(
    ledger: Ledger, data: st.DataObject, version: str
) -> None:
    """Real pueue JSON with one to three structural edits parses or raises PueueParseError, and nothing that
    reads the snapshot breaks."""
    ledger.hostile()
    doc = json.loads(json.dumps(SAMPLES[version]))
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        doc = mutate(doc, data)
    consume(json.dumps(doc, ensure_ascii=data.draw(st.booleans(), label="ascii")).encode())


@FUZZ
@given(data=st.data(), version=st.sampled_from(["v3", "v4"]))
def test_byte_level_mutations_of_real_samples(ledger: Ledger, data: st.DataObject, version: str) -> None:
    """Bytes of a real sample overwritten, deleted or inserted, including invalid UTF-8 inside strings."""
    ledger.hostile()
    raw = bytearray((FIXTURES / f"{version}_status.json").read_bytes())
    poison = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00", b"\\u0000",
                              b"\\ud800", b'"', b"\\", b"{", b"]", b"9" * 30])  # fmt: skip
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(raw)), label="at")
        piece = data.draw(poison | st.binary(min_size=1, max_size=4), label="piece")
        kind = data.draw(st.sampled_from(["overwrite", "insert", "delete"]), label="kind")
        if kind == "insert":
            raw[at:at] = piece
        elif kind == "overwrite":
            raw[at : at + len(piece)] = piece
        else:
            del raw[at : at + len(piece)]
    consume(bytes(raw))


@FUZZ
@given(data=st.data(), version=st.sampled_from(["v3", "v4"]))
def test_invalid_utf8_inside_any_string(ledger: Ledger, data: st.DataObject, version: str) -> None:
    """A byte that is not UTF-8 placed inside a key or a value of a real sample is a parse error."""
    ledger.hostile()
    raw = (FIXTURES / f"{version}_status.json").read_bytes()
    quotes = [m.start() for m in re.finditer(rb'(?<!\\)"', raw)]
    at = data.draw(st.sampled_from(quotes), label="after quote") + 1
    bad = data.draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"]), label="bad")
    consume(raw[:at] + bad + raw[at:])


@pytest.fixture(scope="module")
def map_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mapped")


def _parsed(parser: Any) -> Any:
    try:
        return parser()
    except PueueParseError as exc:
        return f"PueueParseError: {exc}"


def _mapped(document: bytes, path: Path) -> Any:
    """Parse like the local transport: map the file, decode (part by part), release, build."""
    path.write_bytes(document)
    view = read_local_state(str(path))
    try:
        decoded = decode_status(view)
    finally:
        release(view)  # BufferError if a decoded part still held the mapping
    return snapshot_of(decoded)


@FUZZ
@given(data=st.data(), version=st.sampled_from(["v3", "v4"]), bytewise=st.booleans())
def test_a_mutated_mapped_state_parses_as_its_bytes(
    ledger: Ledger, map_dir: Path, data: st.DataObject, version: str, bytewise: bool
) -> None:
    """A real sample with structural or byte edits, mapped and decoded in parts of 1 KB, gives exactly the
    snapshot or the PueueParseError message of the one-pass decode of its bytes."""
    ledger.hostile()
    if bytewise:
        raw = bytearray((FIXTURES / f"{version}_status.json").read_bytes())
        for _ in range(data.draw(st.integers(1, 3), label="edits")):
            at = data.draw(st.integers(0, len(raw)), label="at")
            piece = data.draw(st.sampled_from([b"\xff", b'"', b"}", b"{", b",", b"1", b"\\"]), label="piece")
            if data.draw(st.booleans(), label="insert"):
                raw[at:at] = piece
            else:
                del raw[at : at + len(piece)]
        document = bytes(raw)
    else:
        doc = json.loads(json.dumps(SAMPLES[version]))
        for _ in range(data.draw(st.integers(1, 3), label="edits")):
            doc = mutate(doc, data)
        document = json.dumps(doc, separators=(",", ":")).encode()
    with mock.patch.object(parse, "DROP_STEP", 1024):
        mapped = _parsed(lambda: _mapped(document, map_dir / "state.json"))
    assert mapped == _parsed(lambda: snapshot_of(decode_status(document)))


@FUZZ
@given(data=st.data(), version=st.sampled_from(["v3", "v4"]))
def test_mutated_group_json(ledger: Ledger, data: st.DataObject, version: str) -> None:
    """`pueue group --json` with a structural edit gives a groups map or PueueParseError."""
    ledger.hostile()
    doc = mutate(json.loads(json.dumps(GROUP_SAMPLES[version])), data)
    try:
        groups = parse_groups(json.dumps(doc).encode())
    except PueueParseError:
        return
    assert all(isinstance(g.parallel, int) and isinstance(g.status, str) for g in groups.values())


@pytest.mark.parametrize(
    "document",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"tasks": {}, "groups": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001,
        b'{"tasks": {"0": {"envs": ' + b"[" * 50_000 + b"]" * 50_000 + b'}}, "groups": {}}',
        b'{"tasks": {}, "groups": {"' + b"g" * 5_000_000 + b'": {"status": "Running", "parallel_tasks": 1}}}',
        b'{"tasks": {}, "groups": {}, "x": "' + b"\\u0000" * 500_000 + b'"}',
        b'{"tasks": {' + b",".join(b'"%d": 1' % i for i in range(100_000)) + b'}, "groups": {}}',
        b'{"tasks": {}, "groups": {"a": {"status": "Running", "parallel_tasks": 1' + b"0" * 5000 + b"}}}",
    ],
    ids=[
        "deep-array",
        "deep-object",
        "deep-envs",
        "5MB-key",
        "nul-escapes",
        "100k-bad-tasks",
        "5000-digit-number",
    ],
)
def test_pathological_documents_end(ledger: Ledger, document: bytes) -> None:
    """Deep nesting, huge keys and numbers, and many bad tasks give an answer or PueueParseError, and end."""
    ledger.hostile()
    consume(document)
