"""Hostile poll output (issue 8, point 5): the poll header, the probe block and pueue's stderr, fuzzed with
hypothesis from the real probe blocks (``tests/fixtures/proc``) glued to hostile strings: only HostError or
ProbeParseError may come out, and what reaches a log is one short printable line. ``tests/test_probes.py``
already covers garbled probe lines; these add the header, the payload and 1 MB lines.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.faults.hostile_kit import FUZZ, STRINGS
from tests.faults.ledger import Ledger
from watcher.errors import HostError
from watcher.probes.proc import (
    ProbeParseError,
    parse_block,
    parse_df,
    parse_loadavg,
    parse_meminfo,
    parse_vmstat,
    read_tree,
)
from watcher.remote.poll import MARKER, read_output
from watcher.remote.pueue import pueue_error

TREES = Path(__file__).resolve().parents[1] / "fixtures" / "proc"
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
