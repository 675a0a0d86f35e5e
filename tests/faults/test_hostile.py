"""Hostile input (issue 8, point 5): fuzzed pueue JSON and poll output, hostile names end to end, and SQL
injection attempts in the configuration.

* The parsers of what a host sends (pueue's JSON, the poll header, the probe block, pueue's stderr) are fuzzed
  with hypothesis from mutations of the real samples (``tests/fixtures/pueue``, ``tests/fixtures/proc``),
  and every parsed snapshot is pushed through what consumes it (status output, the phase tracker, events,
  the Slack and webhook payloads): only the documented errors may come out. ``tests/test_parse.py`` and
  ``tests/test_probes.py`` already cover arbitrary JSON, arbitrary bytes and garbled probe lines; these add
  structure-aware mutations, invalid UTF-8 inside strings, timestamps at the edges, the poll header, and
  the downstream consumers.
* Group names, labels, commands and paths that hold shell metacharacters, Slack mentions, markdown, terminal
  escapes and 1 MB strings go through the real daemon, real sshd and the pueue simulator, up to Slack and a
  webhook; gates and hygiene act on those groups.
* SQL identifiers in the configuration that try an injection are refused, and remote values reach
  ClickHouse only as parameters.
"""

from __future__ import annotations

import copy
import json
import os
import re
import select
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from checks.probes.proc import (
    ProbeParseError,
    parse_block,
    parse_df,
    parse_loadavg,
    parse_meminfo,
    parse_vmstat,
    read_tree,
)
from tests.conftest import FIXTURES, SSHFactory
from tests.faults import hostile
from tests.faults.ledger import Ledger
from tests.harness.clickhouse import ClickHouseServer
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import REPO, sim_env, ssh_entry, watcher
from tests.harness.receiver import Receiver
from tests.harness.services import free_port
from tests.pueue_sim.config import settings_from_yaml
from tests.pueue_sim.protocol import connect
from tests.pueue_sim.scenario import SimHost
from watcher.alerts import slack, webhook
from watcher.errors import HostError, PueueParseError
from watcher.events import phase_completed
from watcher.phases.tracker import GroupTrack, step
from watcher.poll.poller import PollResult
from watcher.poll.remote import MARKER, pueue_error, read_local_state, read_output, release
from watcher.pueue import parse
from watcher.pueue.parse import decode_status, parse_groups, snapshot_of
from watcher.render import status_document, status_table
from watcher.sanitize import LABEL_MAX
from watcher.sanitize import label as label_of

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TREES = Path(__file__).resolve().parents[1] / "fixtures" / "proc"
# Keep each property to a few seconds on a shared 2-core machine; no deadline: the machine is shared, and a
# hang would show as a test that never ends, not as a slow example.
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- pueue JSON -------------------------------------------------------------------------------------------

SAMPLES = {version: json.loads((FIXTURES / f"{version}_status.json").read_text()) for version in ("v3", "v4")}
GROUP_SAMPLES = {
    version: json.loads((FIXTURES / f"{version}_group.json").read_text()) for version in ("v3", "v4")
}

STRINGS = st.sampled_from(
    [
        *hostile.SLACK,
        *hostile.MARKDOWN,
        *hostile.TERMINAL,
        *hostile.shell(Path("/nonexistent/m")),
        "a\x00b",
        "",
    ]
) | st.text(max_size=30)
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
    assert not _TERMINAL_UNSAFE.search(table), repr(table[:300])
    for group in sorted(set(snapshot.groups) | set(snapshot.tasks_by_group)):
        track = GroupTrack()
        for first_sight in (False, True):
            stepped = step(track, "h", group, snapshot.group_tasks(group), NOW, first_sight=first_sight)
            track = GroupTrack.decode(track.encode())
            events = [phase_completed(record) for record in stepped.completed]
            _assert_inert(slack.payload(events))
            webhook.body(events)


# What a terminal must never receive from remote text: C0 and C1 controls (a newline apart), bidi overrides
# and isolates, line and paragraph separators.
_TERMINAL_UNSAFE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _assert_inert(payload: dict[str, Any]) -> None:
    """No Slack control sequence survives in any text of the payload."""
    texts = [payload["text"]] + [b["text"]["text"] for b in payload["blocks"]]
    for text in texts:
        assert "<" not in text and ">" not in text, repr(text[:300])
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), repr(text[:300])


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


# --- the poll header, the probe block and pueue's stderr -------------------------------------------------

PROBE_BLOCKS = [read_tree(TREES / name, "/home") for name in sorted(p.name for p in TREES.iterdir())]
HEADER_WORDS = (
    "nopueue file daemon unchanged changed state status handoff probe-begin probe-end pueue-watcher-end"
)
ODD_WORDS = "state.json gzip zstd none up down 12 1.5 -1 1e9 ² ٣"  # superscript two, Arabic-Indic three
HEADER_PIECES = st.sampled_from(
    [*HEADER_WORDS.split(), *ODD_WORDS.split(), " ", "\n", "\x00", "\xff", "\r", "\x1b[31m", "9" * 24]
)


@FUZZ
@given(data=st.data())
def test_poll_output_is_a_remote_state_or_a_host_error(ledger: Ledger, data: st.DataObject) -> None:
    """Whatever a host prints after the marker is a HostError or a RemoteState whose probe block parses and
    whose payload decompresses or fails as a HostError."""
    ledger.hostile()
    block = data.draw(st.sampled_from(PROBE_BLOCKS), label="block")
    lines = block.split("\n")
    for _ in range(data.draw(st.integers(0, 3), label="edits")):
        at = data.draw(st.integers(0, len(lines) - 1), label="line")
        lines[at] = data.draw(st.lists(HEADER_PIECES, max_size=8).map("".join) | STRINGS, label="text")
    header = data.draw(st.lists(st.lists(HEADER_PIECES, max_size=6).map("".join), max_size=6), label="header")
    payload = data.draw(st.binary(max_size=64), label="payload")
    stdout = (
        b"login banner\n" + MARKER + "\n".join([*lines, *header]).encode("utf-8", "surrogatepass") + payload
    )
    rc = st.sampled_from([b"1", b"127", b"9" * 5000, b"\xd9\xa3"]).map(
        lambda n: b"pueue-watcher-rc " + n + b"\n"
    )
    stderr = data.draw(st.binary(max_size=64) | rc, label="stderr")
    try:
        remote = read_output(stdout, stderr, data.draw(st.integers(0, 255), label="exit"))
    except HostError:
        return
    if remote.probe_text is not None:
        parse_block(remote.probe_text)
    if remote.kind in ("state", "status"):
        try:
            remote.payload()
        except HostError:
            pass


@FUZZ
@given(text=st.lists(st.sampled_from(PROBE_BLOCKS) | STRINGS | HEADER_PIECES, max_size=6).map("\n".join))
def test_probe_parsers_take_hostile_text(ledger: Ledger, text: str) -> None:
    """Real blocks glued to hostile strings give a sample whose problems are short single lines, and each
    section parser returns or raises ProbeParseError."""
    ledger.hostile()
    sample = parse_block(text)
    assert all("\n" not in problem and len(problem) < 300 for problem in sample.problems), sample.problems
    for parser in (parse_loadavg, parse_meminfo, parse_vmstat, parse_df):
        try:
            parser(text)
        except ProbeParseError:
            pass


@FUZZ
@given(data=st.binary(max_size=400) | STRINGS.map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_pueue_error_is_one_printable_line(ledger: Ledger, data: bytes) -> None:
    """pueue's stderr, whatever it holds, becomes one printable line of at most 300 characters."""
    ledger.hostile()
    line = pueue_error(data)
    assert len(line) <= 300 and line.isprintable(), line


@pytest.mark.parametrize(
    "text",
    [
        "probe-begin\nuname Linux\n--df\nFilesystem 1024-blocks Used\n"
        + "a "
        + "1 " * 500_000
        + "\nprobe-end\n",
        "probe-begin\nuname Linux\n--df\nFilesystem 1024-blocks\nx\n" + " 1" * 500_000 + " 5% /\nprobe-end\n",
        "probe-begin\nuname Linux\n--loadavg\n" + "1.0 " * 250_000 + "\nprobe-end\n",
        "probe-begin\nuname Linux\n--meminfo\n" + "MemTotal: " + "9" * 1_000_000 + " kB\nprobe-end\n",
        "probe-begin\n" + "--x\n" * 250_000,
        "probe-begin\nuname " + "Linux" * 200_000 + "\n",
        "probe-begin\n" + "\u0663" * 1_000_000,
    ],
    ids=["df-numbers", "df-wrapped", "loadavg", "meminfo-digits", "many-sections", "uname", "arabic-digits"],
)
def test_one_megabyte_probe_blocks_end(ledger: Ledger, text: str) -> None:
    """1 MB lines built to make the regular expressions backtrack give a sample with problems, and end."""
    ledger.hostile()
    sample = parse_block(text)
    assert sample.problems or not sample.supported
    assert all(len(problem) < 300 for problem in sample.problems)


# --- hostile names end to end ----------------------------------------------------------------------------


class PueueSocket:
    """Requests to a simulated pueue daemon over its socket, as any pueue_lib client sends them: the way to
    give pueue values that no command line can carry (a NUL, a 1 MB label), and fast for many requests."""

    def __init__(self, sim: SimHost) -> None:
        settings = settings_from_yaml(sim.config_path.read_text(), sim.flavor, sim.config_path)
        settings.unix_socket_path_ = sim.socket_path
        self.conn, _ = connect(settings, sim.flavor)
        self.work = sim.work_dir

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.conn.send(request)
        answer: dict[str, Any] = self.conn.receive()
        assert answer["type"] == "success", (answer, repr(request)[:300])
        return answer

    def group(self, name: str, *, paused: bool) -> None:
        self({"cmd": "group", "action": "add", "name": name, "parallel": None})
        if paused:
            self({"cmd": "pause", "selection": {"all": False, "group": name, "ids": []}, "wait": False})

    def start(self, name: str) -> None:
        self({"cmd": "start", "selection": {"all": False, "group": name, "ids": []}})

    def add(self, group: str, command: str, label: str | None, path: Path | None = None, **extra: Any) -> int:
        request = {"cmd": "add", "command": command, "path": str(path or self.work), "envs": {"PATH": "/bin"},
                   "group": group, "dependencies": [], "priority": None, "label": label, "stashed": False,
                   "enqueue_at": None, "immediate": False, "print_task_id": True} | extra  # fmt: skip
        return int(self(request)["text"])

    def close(self) -> None:
        self.conn.close()


def toml_value(value: Any) -> str:
    """A TOML value (JSON strings are TOML basic strings while they hold no astral character)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def toml(sections: dict[str, dict[str, Any]], arrays: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for name, values in sections.items():
        lines += [f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in values.items())]
    for name, tables in arrays.items():
        for table in tables:
            lines += [f"[[{name}]]", *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return watcher(*args, timeout=180)


def history(config: Path) -> list[dict[str, Any]]:
    proc = cli("history", "--json", "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


@pytest.mark.integration
def test_hostile_names_travel_end_to_end(ledger: Ledger, tmp_path: Path, sshd_factory: SSHFactory) -> None:
    """Hostile group names, labels, commands and paths (shell code, Slack mentions, markdown, terminal
    escapes, a NUL, 1 MB) polled through sshd by the daemon: gates and hygiene act on them intact, nothing
    runs, Slack pings nobody, and the terminal output, the log and /metrics stay clean."""
    marker = tmp_path / "marker"
    marker.mkdir()
    attacks = hostile.shell(marker)
    names = [*attacks, *hostile.SLACK, *hostile.MARKDOWN, *hostile.TERMINAL, "nul\x00name"]
    huge_group = hostile.one_megabyte("group")
    huge_label = hostile.one_megabyte("label")
    huge_command = "true #" + hostile.one_megabyte("command")
    # Gates start groups whose names begin with "-", hold shell code, or paint the terminal.
    gated = {"<!channel>": attacks[10], "*bold*": attacks[0], "~strike~": hostile.TERMINAL[0]}
    receivers = [Receiver().start(), Receiver().start()]
    slack_hook, web_hook = receivers
    sim = SimHost(tmp_path / "sim", "v4")
    daemon = DaemonProcess(tmp_path / "c.toml", tmp_path / "daemon.log")
    with ledger.fault("hostile names end to end"):
        try:
            sim.start_daemon()
            pueue = PueueSocket(sim)
            tried = 0
            for i, name in enumerate([*names, huge_group]):
                pueue.group(name, paused=True)
                label = names[(i + 7) % len(names)]
                path = sim.work_dir / f"p{i}" / label.lstrip("/").replace("\x00", "")
                path.mkdir(parents=True, exist_ok=True)
                pueue.add(name, "exit 3" if i % 3 == 0 and name not in gated else "true", label, path)
                tried += 3
            pueue.group("big", paused=True)
            pueue.add("big", "true", huge_label)
            pueue.add("big", huge_command, "command of 1 MB")  # too long for execve: FailedToSpawn
            for attack in attacks:  # commands that would touch a marker if anything ran them: kept stashed
                pueue.add("default", attack, attack, stashed=True)
            tried += 3 + len(attacks)
            ledger.hostile(tried)

            server = sshd_factory.start(sim_env(sim))
            metrics_port = free_port()
            config = tmp_path / "c.toml"
            config.write_text(
                toml(
                    {
                        "watcher": {
                            "poll_interval": "1s",
                            "fast_interval": "0.5s",
                            "state_path": str(tmp_path / "state.db"),
                        },
                        "hygiene": {"max_state_bytes": 1, "clean": "all", "cooldown": "0.1s"},
                        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
                    },
                    {
                        "hosts": [ssh_entry("bigblack", server, sim)],
                        "gates": [{"host": "bigblack", "after": a, "start": b} for a, b in gated.items()],
                        "alerts": [
                            {"name": "slack", "kind": "slack", "url": f"{slack_hook.url}/services/T/B/x"},
                            {"name": "hook", "kind": "webhook", "url": f"{web_hook.url}/hook"},
                        ],
                    },
                )
            )
            daemon.start()
            daemon.wait_for(lambda: daemon.events("started"))  # its store exists: history can read it
            # The group with a 1 MB name is over watcher.max_group_name: not watched (and counted as dropped).
            every = {*names, "big"}
            daemon.wait_for(lambda: {p["group"] for p in history(config) if p["status"] == "open"} >= every)
            for name in [*names, huge_group, "big"]:
                if name not in gated.values():
                    pueue.start(name)
            pueue.close()

            def completed() -> set[str]:
                return {
                    e["group"]
                    for r in web_hook.requests
                    for e in r.json()["events"]
                    if e["event"] == "phase.completed"
                }

            daemon.wait_for(lambda: completed() >= every, timeout=180)
            # pueue clean cannot be given a name with a NUL or of 1 MB: those groups are never cleaned.
            uncleanable = {"default", "nul\x00name", huge_group}
            daemon.wait_for(lambda: {t["group"] for t in sim.status()["tasks"].values()} == uncleanable)
            group_status = {name: group["status"] for name, group in sim.status()["groups"].items()}
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).read()
            assert daemon.terminate() == 0
            status_table_out = cli("status", "-c", str(config))
            status_json_out = cli("status", "--json", "-c", str(config))
            history_table_out = cli("history", "-c", str(config))
            history_json_out = cli("history", "--json", "-c", str(config))
        finally:
            daemon.stop()
            sim.close()
            for receiver in receivers:
                receiver.stop()

        # Nothing ran: no marker on the host (the same machine here), and the attacks are still stashed.
        assert hostile.marker_files(marker) == []
        # The names travelled intact: the gate started the group it names; hygiene cleaned every group.
        events = [e for r in web_hook.requests for e in r.json()["events"]]
        gates = [e for e in events if e["event"] == "gate.started"]
        assert sorted(g["group"] for g in gates) == sorted(gated.values())
        assert [group_status[name] for name in gated.values()] == ["Running"] * len(gated)
        cleaned = {g for e in events if e["event"] == "state.cleaned" for g in e["groups"]}
        assert cleaned == every - uncleanable
        # Every committed completion reached the webhook; each phase once.
        phases = [p for p in history(config) if p["status"] == "completed"]
        received = [e["id"] for e in events]
        ledger.events(
            [f"phase.completed:{p['id']}" for p in phases],
            received,
            [e["phase"] for e in events if e["event"] == "phase.completed"],
        )
        assert {p["group"] for p in phases} >= every
        assert huge_group not in {p["group"] for p in phases}
        # Slack: nothing it would read as a mention, a link or an entity; 1 MB strings cut to Slack's limits.
        for request in slack_hook.requests:
            payload = request.json()
            _assert_inert(payload)
            assert all(len(b["text"]["text"]) <= 3000 for b in payload["blocks"])
            assert len(payload["text"]) <= 3000
        assert slack_hook.requests
        # Terminal output: no escape or control character; JSON output is ASCII.
        for proc in (status_table_out, history_table_out):
            assert proc.returncode == 0, proc.stderr
            assert not _TERMINAL_UNSAFE.search(proc.stdout), repr(proc.stdout[:2000])
            assert max(len(line) for line in proc.stdout.splitlines()) < 1000
        for proc in (status_json_out, history_json_out):
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.isascii()
            json.loads(proc.stdout)
        # The log is one JSON object per line (no name broke a line), /metrics is well formed and keeps
        # every group name as it is.
        assert [line for line in daemon.lines() if line.get("event") == "<not json>"] == []
        assert max(map(len, daemon.log.read_text().splitlines())) < 20_000  # journald splits beyond 48K
        families = list(text_string_to_metric_families(metrics.decode()))
        groups = {s.labels.get("group") for f in families for s in f.samples}
        # Each name as its label: itself when short and printable, else cut, cleaned and hashed (sanitize.py).
        assert groups >= {label_of(name) for name in names}
        assert all(len(g) <= LABEL_MAX for g in groups if g is not None)
        dropped = [s for f in families for s in f.samples if s.name == "pueue_watcher_groups_dropped"]
        assert {s.labels["reason"]: s.value for s in dropped}["name_length"] == 1


def run_in_terminal(args: list[str], env: dict[str, str], timeout: float = 180) -> bytes:
    """``python -m watcher ARGS`` with a pseudo-terminal as its stdout and stderr; what it printed."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "watcher", *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, cwd=REPO, env=env)  # fmt: skip
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side closed, the command has ended
                    break
                if not chunk:
                    break
                output += chunk
        assert proc.wait(timeout=30) == 0, output.decode(errors="replace")[-3000:]
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return bytes(output)


@pytest.mark.integration
def test_the_log_in_a_terminal_shows_hostile_names_escaped(ledger: Ledger, tmp_path: Path) -> None:
    """In a terminal, groups and labels named with terminal escapes or 1 MB strings are logged escaped and
    cut, never let loose on the terminal."""
    names = [*hostile.TERMINAL, hostile.one_megabyte("\x1b[2J")]
    ledger.hostile(len(names))
    sim = SimHost(tmp_path / "sim", "v4")
    with ledger.fault("terminal escapes in the console log"):
        try:
            sim.start_daemon()
            pueue = PueueSocket(sim)
            ids = []
            for name in names:
                pueue.group(name, paused=False)
                ids.append(pueue.add(name, "exit 1", name))
            pueue.close()
            for task_id in ids:
                sim.wait_for_status(task_id, "Done")
            config = tmp_path / "c.toml"
            host = {"name": "local", "transport": "local", "pueue": str(sim.pueue_bin),
                    "pueue_dir": str(sim.pueue_dir)}  # fmt: skip
            watcher_section = {"state_path": str(tmp_path / "state.db"), "alert_on_first_sight": True}
            config.write_text(
                toml({"watcher": watcher_section, "metrics": {"listen": ""}}, {"hosts": [host]})
            )
            output = run_in_terminal(["once", "-c", str(config)], {**os.environ, **sim_env(sim)})
        finally:
            sim.close()
        text = output.decode()
        # The 1 MB name is over watcher.max_group_name: that group is not watched, and said so.
        assert len(re.findall(r"phase\.completed(?!:)", text)) == len(names) - 1, text[-3000:]  # not in ids
        assert "host.groups_dropped" in text
        for name in names:
            assert name.encode() not in output
            assert name[:40].encode() not in output or name[:40].isprintable()
        for raw in ("\x1b[2J", "\x1b]", "\x9b", "\x07", "\x08", "\u202e", "\u2028", "over\rwrite"):
            assert raw.encode() not in output, raw
        assert max(len(line) for line in text.splitlines()) < 20_000


# --- SQL injection -----------------------------------------------------------------------------------------

# Where an identifier sits in the configuration, and the key its error must name.
_IDENTIFIER_KEYS = {
    "table": ("checks[0].table", {"table": None, "columns": ["a"]}),
    "columns": ("checks[0].columns", {"table": "t", "columns": None}),
    "group_by": ("checks[0].group_by", {"table": "t", "columns": ["a"], "group_by": None}),
    "key": ("checks[0].key", {"table": "t", "key": None}),
    "null columns": ("checks[0].columns", {"table": "t", "columns": None}),
    "database": ("clickhouse[0].database", {"table": "t", "columns": ["a"]}),
}


def _identifier_config(where: str, value: str) -> dict[str, list[dict[str, Any]]]:
    _, fields = _IDENTIFIER_KEYS[where]
    kind = {"key": "duplicates", "null columns": "null_coverage"}.get(where, "negatives")
    check: dict[str, Any] = {"name": "c", "kind": kind, "clickhouse": "main"}
    for key, default in fields.items():
        check[key] = default if default is not None else ([value] if key != "table" else value)
    clickhouse = {"name": "main"} | ({"database": value} if where == "database" else {})
    return {"clickhouse": [clickhouse], "checks": [check]}


@pytest.mark.parametrize("where", sorted(_IDENTIFIER_KEYS))
def test_injection_in_an_identifier_is_refused_naming_the_key(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """Each hostile table, column, key or database name makes `config validate` exit 2 with one line that
    names the key and shows the value in ASCII (so that a look-alike letter is visible)."""
    from watcher.cli import main

    key, _ = _IDENTIFIER_KEYS[where]
    for value in hostile.SQL_IDENTIFIERS:
        ledger.hostile()
        path = tmp_path / "c.toml"
        path.write_text(toml({}, _identifier_config(where, value)))
        assert main(["config", "validate", str(path)]) == 2, value
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"config error: {path}: {key}: "), line
        assert ascii(value[:60])[1:-1] in line and line.isascii(), line


def test_config_validate_lists_every_injection_attempt(ledger: Ledger, tmp_path: Path) -> None:
    """A file with injection attempts in every place makes `pueue-watcher config validate` exit 2 with one
    line per wrong key, while operator SQL in `where` stays valid."""
    attempts = ["t; DROP TABLE x", "a` OR 1=1 --", "x' OR '1'='1", "b\u0430rs", "bars\n"]
    ledger.hostile(len(attempts))
    common = {"clickhouse": "main"}
    checks = [
        common | {"name": "n", "kind": "negatives", "table": attempts[0], "columns": [attempts[1]]},
        common | {"name": "d", "kind": "duplicates", "table": "db.t", "key": [attempts[4]]},
        common | {"name": "u", "kind": "null_coverage", "table": attempts[3], "columns": ["a"]},
    ]
    checks[0]["group_by"] = [attempts[2]]
    path = tmp_path / "c.toml"
    path.write_text(toml({}, {"clickhouse": [{"name": "main", "database": attempts[0]}], "checks": checks}))
    proc = cli("config", "validate", str(path))
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert [line.split(": ")[2] for line in lines] == [
        "clickhouse[0].database",
        "checks[0].table",
        "checks[0].columns",
        "checks[0].group_by",
        "checks[1].key",
        "checks[2].table",
    ], proc.stderr
    valid = {"name": "w", "kind": "negatives", "clickhouse": "main", "table": "db.t", "columns": ["a"],
             "where": "grp = %(group)s OR 1=1 --"}  # fmt: skip
    path.write_text(toml({}, {"clickhouse": [{"name": "main"}], "checks": [valid]}))
    assert cli("config", "validate", str(path)).returncode == 0


@pytest.mark.integration
def test_remote_group_names_reach_clickhouse_only_as_parameters(
    ledger: Ledger, tmp_path: Path, sshd_factory: SSHFactory
) -> None:
    """Groups named like SQL injections reach a real ClickHouse only as parameters: a check counts exactly
    the rows of that literal name, writes are refused, and the table keeps every row."""
    from clickhouse_driver import Client

    names = ["x' OR 1=1 --", "'; DROP TABLE inj.rows; --", "\\' OR 1=1 --", "%(host)s", "x\n) OR (1=1",
             "a`b\"c", "nul\x00' OR '1'='1"]  # fmt: skip
    rows = [(name, i + 1) for i, name in enumerate(names) for _ in range(i + 1)] + [("other", 0)] * 100
    ledger.hostile(len(names))
    clickhouse = ClickHouseServer(tmp_path / "clickhouse").start()
    sim = SimHost(tmp_path / "sim", "v4")
    with ledger.fault("SQL injection through remote group names"):
        try:
            client = Client("127.0.0.1", port=clickhouse.port)
            client.execute("CREATE DATABASE inj")
            client.execute("CREATE TABLE inj.rows (grp String, n Int64) ENGINE = MergeTree ORDER BY grp")
            client.execute("INSERT INTO inj.rows (grp, n) VALUES", rows)
            sim.start_daemon()
            pueue = PueueSocket(sim)
            ids = []
            for name in names:
                pueue.group(name, paused=False)
                ids.append(pueue.add(name, "true", "job"))
            pueue.close()
            for task_id in ids:
                sim.wait_for_status(task_id, "Done")
            server = sshd_factory.start(sim_env(sim))
            config = tmp_path / "c.toml"
            checks = [
                {"name": "rows", "kind": "sql", "clickhouse": "main", "groups": names,
                 "sql": "SELECT count() FROM inj.rows WHERE grp = %(group)s"},
                {"name": "drop", "kind": "sql", "clickhouse": "main", "groups": names[:1],
                 "sql": "DROP TABLE inj.rows"},
                {"name": "then-drop", "kind": "sql", "clickhouse": "main", "groups": names[:1],
                 "sql": "SELECT 1; DROP TABLE inj.rows"},
            ]  # fmt: skip
            config.write_text(
                toml(
                    {"watcher": {"state_path": str(tmp_path / "state.db"), "alert_on_first_sight": True},
                     "metrics": {"listen": ""}},
                    {"hosts": [ssh_entry("bigblack", server, sim)],
                     "clickhouse": [{"name": "main", "port": clickhouse.port}], "checks": checks},
                )
            )  # fmt: skip
            proc = cli("once", "--json", "-c", str(config))
            assert proc.returncode == 0, proc.stderr
            events = json.loads(proc.stdout)
            survivors = client.execute("SELECT count() FROM inj.rows")[0][0]
            client.disconnect()
        finally:
            sim.close()
            clickhouse.stop()
        counted = {e["group"]: e["violations"] for e in events if e.get("check") == "rows"}
        assert counted == {name: i + 1 for i, name in enumerate(names)}, counted
        refused = {e["check"]: e["error"] for e in events if e["event"] == "check.errored"}
        assert set(refused) == {"drop", "then-drop"}, refused
        assert "readonly" in refused["drop"].lower()
        assert survivors == len(rows)
