"""Host health probes: parsers on fixture trees, swap rates, breaches, their tracking, and hostile input."""

from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import examples
from tests.harness.services import IN_CI
from watcher.config import ProbesConfig
from watcher.probes import (
    KEYS,
    PROBE_SCRIPT,
    BreachTracker,
    Change,
    ProbeParseError,
    ProbeSample,
    Rates,
    assessed,
    breaches,
    metrics,
    parse_block,
    parse_df,
    parse_loadavg,
    parse_meminfo,
    parse_vmstat,
    rates,
    read_tree,
)

TREES = Path(__file__).parent / "fixtures" / "proc"
KIB = 1024
CONFIG = ProbesConfig()

# The block as the design brief prints it; the `workstation` tree must produce the same sample.
BRIEF_BLOCK = """\
probe-begin
uname Linux
cpus 32
--loadavg
0.52 0.61 0.70 2/1234 56789
--meminfo
MemTotal:       65843012 kB
MemAvailable:   40123456 kB
SwapTotal:       8388604 kB
SwapFree:        8388604 kB
--vmstat
pswpin 1234
pswpout 5678
--df
Filesystem     1024-blocks      Used Available Capacity Mounted on
/dev/nvme0n1p2   959786032 312345678 598765432      35% /
probe-end
"""

WORKSTATION = ProbeSample(
    supported=True,
    system="Linux",
    cpus=32,
    load1=0.52,
    load5=0.61,
    load15=0.70,
    mem_total=65843012 * KIB,
    mem_available=40123456 * KIB,
    swap_total=8388604 * KIB,
    swap_free=8388604 * KIB,
    swap_in_pages=1234,
    swap_out_pages=5678,
    disk_total=959786032 * KIB,
    disk_available=598765432 * KIB,
)

# (tree, pueue_dir) of every fixture tree, for the properties that hold for all of them.
ALL_TREES = [
    ("workstation", "/home/alice/.local/share/pueue"),
    ("overloaded", "/home/build/.local/share/pueue"),
    ("overloaded-later", "/home/build/.local/share/pueue"),
    ("old-kernel", "/root/.local/share/pueue"),
    ("macos", "/Users/bob/Library/Application Support/pueue"),
    ("wrapped-df", "/scratch/pueue"),
]


def sample(name: str, pueue_dir: str = "/") -> ProbeSample:
    return parse_block(read_tree(TREES / name, pueue_dir))


# --- fixture trees ---------------------------------------------------------------------------------------


def test_brief_block_parses_to_exact_values() -> None:
    """The block of the design brief gives exact bytes, counters and loads, and no problems."""
    assert parse_block(BRIEF_BLOCK) == WORKSTATION


def test_workstation_tree_prints_the_brief_block() -> None:
    """A tree of whole /proc files and a whole df listing prints exactly what the remote script prints."""
    assert read_tree(TREES / "workstation", "/home/alice/.local/share/pueue") == BRIEF_BLOCK


@pytest.mark.parametrize(
    ("pueue_dir", "total_kib", "available_kib"),
    [
        ("/data/pueue", 3844640564, 2000000),
        ("/dataset/pueue", 959786032, 598765432),  # /dataset is not under /data
        ("/boot/efi", 523248, 517028),
    ],
)
def test_tree_picks_the_mount_of_pueue_dir(pueue_dir: str, total_kib: int, available_kib: int) -> None:
    """Like `df DIR`, the tree reports the filesystem whose mount point is the deepest prefix of pueue_dir."""
    probe = sample("workstation", pueue_dir)
    assert (probe.disk_total, probe.disk_available) == (total_kib * KIB, available_kib * KIB)


def test_overloaded_tree() -> None:
    """A box that is overloaded and swapping reads like any other: exact values, no problems."""
    assert sample("overloaded") == ProbeSample(
        supported=True,
        system="Linux",
        cpus=8,
        load1=30.10,
        load5=25.40,
        load15=18.02,
        mem_total=16303940 * KIB,
        mem_available=326078 * KIB,
        swap_total=2097148 * KIB,
        swap_free=12288 * KIB,
        swap_in_pages=1000000,
        swap_out_pages=2000000,
        disk_total=479151816 * KIB,
        disk_available=500000 * KIB,
    )


def test_old_kernel_without_memavailable() -> None:
    """A kernel without MemAvailable leaves it None, says so once, and the memory limit is not judged."""
    probe = sample("old-kernel")
    assert probe.supported and probe.mem_available is None
    assert (probe.mem_total, probe.swap_total, probe.swap_free) == (
        8061404 * KIB,
        4128764 * KIB,
        4128764 * KIB,
    )
    assert probe.problems == ("meminfo: no MemAvailable",)
    assert (probe.disk_total, probe.disk_available) == (51475068 * KIB, 38732908 * KIB)
    assert assessed(probe, Rates(0.0, 0.0)) == {"load", "swap", "disk"}
    assert breaches(probe, Rates(0.0, 0.0), CONFIG) == {}


def test_macos_is_unsupported_not_an_error() -> None:
    """A Darwin host gives supported=False, every value None, no problems, no breaches and no metrics."""
    probe = sample("macos", "/Users/bob/Library/Application Support/pueue")
    assert probe == ProbeSample(supported=False, system="Darwin")
    assert breaches(probe, Rates(1e6, 1e6), CONFIG) == {}
    assert assessed(probe, Rates(1e6, 1e6)) == frozenset()
    assert set(metrics(probe, Rates()).values()) == {None}


@pytest.mark.parametrize(
    ("pueue_dir", "total_kib", "available_kib"),
    [("/scratch/pueue", 1921724676, 746496), ("/home/carol/.local/share/pueue", 102626232, 36133412)],
)
def test_wrapped_df_lines_are_joined(pueue_dir: str, total_kib: int, available_kib: int) -> None:
    """A long device name that df wrapped onto its own line still gives the row's numbers."""
    probe = sample("wrapped-df", pueue_dir)
    assert (probe.disk_total, probe.disk_available) == (total_kib * KIB, available_kib * KIB)
    assert probe.problems == ()


# --- each parser -----------------------------------------------------------------------------------------


def test_parse_loadavg() -> None:
    """The three loads are read; the running/total and last-pid fields are ignored."""
    assert parse_loadavg("0.52 0.61 0.70 2/1234 56789\n") == (0.52, 0.61, 0.70)
    assert parse_loadavg("  123.45 0.00 7.10 1/1\n") == (123.45, 0.0, 7.10)


def test_parse_meminfo_converts_kib_and_keeps_counts() -> None:
    """kB values become bytes; HugePages_* counts stay counts."""
    text = "MemTotal:  100 kB\nActive(anon):  3 kB\nHugePages_Total:   7\nHugepagesize:  2048 kB\n"
    assert parse_meminfo(text) == {
        "MemTotal": 100 * KIB,
        "Active(anon)": 3 * KIB,
        "HugePages_Total": 7,
        "Hugepagesize": 2048 * KIB,
    }


def test_parse_vmstat() -> None:
    """Every `name value` line of /proc/vmstat is read, not only the swap counters."""
    assert parse_vmstat("pswpin 1234\npswpout 5678\npgfault 98765432101\n") == {
        "pswpin": 1234,
        "pswpout": 5678,
        "pgfault": 98765432101,
    }


def test_parse_df_block_size_and_negative_available() -> None:
    """The header's block size scales the numbers, and a negative Available (reserve in use) reads as 0."""
    text = (
        "Filesystem 512-blocks Used Available Capacity Mounted on\n/dev/sda1 2000 1990 -40 100% /srv/my dir\n"
    )
    assert parse_df(text) == (2000 * 512, 0)


@pytest.mark.parametrize(
    ("parser", "text"),
    [
        (parse_loadavg, ""),
        (parse_loadavg, "0.52 0.61"),
        (parse_loadavg, "0.52 0.61 0.7"),  # cut before the running/total field
        (parse_loadavg, "0.52 0.61 0.70 2/1234 56789\n0.1 0.1 0.1 1/1 1"),
        (parse_loadavg, "nan inf 1e3 1/1 1"),
        (parse_loadavg, "٠.٥ 1.0 1.0 1/1 1"),  # Arabic-Indic digits, which float() would accept
        (parse_meminfo, "MemTotal:       65843012 kB\nMemAvailable:   4012"),  # cut inside the number
        (parse_meminfo, "MemTotal: 1 kB\nMemTotal: 2 kB"),
        (parse_meminfo, "MemTotal 1 kB"),
        (parse_meminfo, "MemTotal: " + "9" * 5000 + " kB"),  # int() refuses > 4300 digits with ValueError
        (parse_vmstat, "pswpin"),
        (parse_vmstat, "pswpin 1\npswpin 2"),
        (parse_vmstat, "pswpin -1"),
        (parse_df, ""),
        (parse_df, "/dev/sda1 100 50 50 50% /"),  # no header: the block size is unknown
        (parse_df, "Filesystem 1024-blocks Used Available Capacity Mounted on\n"),
        (parse_df, "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda1 100 50 50 50%"),
        (parse_df, "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/mapper/long-name\n"),
        (
            parse_df,
            "Filesystem 1024-blocks Used Available Capacity Mounted on\n/a 1 1 0 100% /\n/b 2 2 0 100% /b",
        ),
        (parse_df, "df: /nope: No such file or directory"),
    ],
)
def test_parsers_refuse_garbled_text(parser: Callable[[str], object], text: str) -> None:
    """Garbled, cut or foreign text raises ProbeParseError, which is a ValueError, in one short line that
    names the section it could not read."""
    with pytest.raises(ProbeParseError) as caught:
        parser(text)
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    section = parser.__name__.removeprefix("parse_")
    assert message.startswith(f"{section}: ") and "\n" not in message and len(message) < 300, message


# --- the block -------------------------------------------------------------------------------------------


def test_block_among_other_output() -> None:
    """The block is found among other output (pueue's JSON, CRLF line ends); no block at all is a problem."""
    text = '{"tasks": {}, "groups": {}}\r\n' + BRIEF_BLOCK.replace("\n", "\r\n") + "trailing\n"
    assert parse_block(text) == WORKSTATION
    assert parse_block('{"tasks": {}}\n') == ProbeSample(
        supported=True, problems=("no probe block in the output",)
    )


def test_block_with_missing_and_garbled_sections() -> None:
    """A garbled or missing section leaves only its own values None and says why in problems."""
    text = BRIEF_BLOCK.replace("0.52 0.61 0.70 2/1234 56789", "garbage").replace(
        "--vmstat\npswpin 1234\npswpout 5678\n", ""
    )
    probe = parse_block(text.replace("cpus 32", "cpus "))
    assert probe.supported and probe.cpus is None and probe.load1 is None and probe.swap_in_pages is None
    assert probe.mem_available == WORKSTATION.mem_available and probe.disk_total == WORKSTATION.disk_total
    assert probe.problems == ("cpus: cannot read ''", "loadavg: cannot read 'garbage'", "vmstat: missing")


def test_truncated_block_drops_the_cut_line() -> None:
    """Without probe-end, a last line without its newline is ignored rather than read as a smaller number."""
    cut = BRIEF_BLOCK[: BRIEF_BLOCK.index("pswpout 5678") + len("pswpout 56")]
    probe = parse_block(cut)
    assert (probe.swap_in_pages, probe.swap_out_pages) == (1234, None)
    assert probe.problems == (
        "the probe block is truncated (no probe-end)",
        "vmstat: no pswpout",
        "df: missing",
    )


@pytest.mark.parametrize(("name", "pueue_dir"), ALL_TREES)
def test_every_truncation_gives_true_values_or_none(name: str, pueue_dir: str) -> None:
    """Cut anywhere, a block yields no value that differs from the whole block's: each is right or None."""
    block = read_tree(TREES / name, pueue_dir)
    whole = parse_block(block)
    fields = [f.name for f in dataclasses.fields(ProbeSample) if f.name not in ("supported", "problems")]
    for end in range(len(block)):
        cut = parse_block(block[:end])
        for field in fields:
            value = getattr(cut, field)
            assert value is None or value == getattr(whole, field), (end, field, value)


@pytest.mark.skipif(
    (sys.platform != "linux" or shutil.which("sh") is None) and not IN_CI,
    reason="needs /proc and sh (under CI=true it runs, and fails where they are missing)",
)
def test_probe_script_runs_under_set_e_and_parses(tmp_path: Path) -> None:
    """The shell snippet, run here under `set -e`, prints a block the parser reads, even when df fails."""
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "pueue_dir": str(tmp_path)}
    ran = subprocess.run(["sh", "-ec", PROBE_SCRIPT], env=env, capture_output=True, text=True, timeout=10)
    probe = parse_block(ran.stdout)
    assert ran.returncode == 0 and probe.supported and probe.load1 is not None and probe.cpus
    assert probe.mem_total and probe.disk_total and probe.swap_in_pages is not None
    env["pueue_dir"] = str(tmp_path / "missing")
    ran = subprocess.run(["sh", "-ec", PROBE_SCRIPT], env=env, capture_output=True, text=True, timeout=10)
    assert ran.returncode == 0 and ran.stdout.endswith("probe-end\n")
    assert parse_block(ran.stdout).problems[-1] == "df: empty"


# --- rates, breaches, metrics ----------------------------------------------------------------------------


def test_rates_from_two_samples() -> None:
    """Swap rates are the counter deltas over the seconds between the two polls."""
    assert rates(sample("overloaded"), sample("overloaded-later"), 30.0) == Rates(100.0, 200.0)


@pytest.mark.parametrize(
    ("previous", "seconds"),
    [
        (None, 30.0),  # the first poll
        ("overloaded-later", 30.0),  # the counters went down: the host rebooted
        ("overloaded", 0.0),
        ("overloaded", -5.0),
        ("overloaded", math.nan),
    ],
)
def test_no_rate_without_two_comparable_samples(previous: str | None, seconds: float) -> None:
    """No rate on the first sample, after a counter reset, or over a non-positive interval."""
    before = sample(previous) if previous else None
    after = sample("overloaded-later") if previous != "overloaded-later" else sample("overloaded")
    assert rates(before, after, seconds) == Rates(None, None)


def test_rate_of_one_missing_counter_only() -> None:
    """A counter missing from one sample leaves only its own rate None."""
    after = dataclasses.replace(sample("overloaded-later"), swap_out_pages=None)
    assert rates(sample("overloaded"), after, 30.0) == Rates(100.0, None)


def test_breaches_of_an_overloaded_box() -> None:
    """Every limit is breached, each with a one-line reason that gives the numbers."""
    later = sample("overloaded-later")
    found = breaches(later, rates(sample("overloaded"), later, 30.0), CONFIG)
    assert found == {
        "load": "load1 31.4 > 0.9 × 8 CPUs",
        "swap": "swapping 300 pages/s > 0 (in 100, out 200)",
        "memory": "MemAvailable 308 MB is 1.8% of 16.7 GB < 10%",
        "disk": "disk 512 MB free < 1 GB",
    }
    assert all("\n" not in reason for reason in found.values())


def test_no_breach_on_a_healthy_workstation() -> None:
    """A quiet 32-core box breaches nothing, and every limit can be judged."""
    probe = sample("workstation")
    assert breaches(probe, Rates(0.0, 0.0), CONFIG) == {}
    assert assessed(probe, Rates(0.0, 0.0)) == set(KEYS)


def test_breach_thresholds_come_from_the_config() -> None:
    """Raising the limits clears the breaches; load is compared with the limit per CPU times the CPUs."""
    probe = sample("overloaded")
    loose = ProbesConfig(
        max_load_per_cpu=4.0,
        max_swap_pages_per_second=500,
        min_memory_available_ratio=0.01,
        min_disk_free_bytes=100_000_000,
    )
    assert breaches(probe, Rates(100.0, 200.0), loose) == {}
    assert breaches(probe, Rates(None, None), CONFIG).keys() == {"load", "memory", "disk"}


def test_metrics() -> None:
    """The gauge values are the sample's, in bytes and pages, plus the swap rates."""
    assert metrics(sample("workstation"), Rates(0.5, None)) == {
        "load1": 0.52,
        "cpus": 32,
        "memory_available_bytes": 40123456 * KIB,
        "memory_total_bytes": 65843012 * KIB,
        "swap_in_pages_total": 1234,
        "swap_out_pages_total": 5678,
        "swap_in_pages_per_second": 0.5,
        "swap_out_pages_per_second": None,
        "disk_available_bytes": 598765432 * KIB,
    }


# --- breach tracking -------------------------------------------------------------------------------------

LOAD = {"load": "load1 30.1 > 0.9 × 8 CPUs"}


def test_breach_reported_after_n_polls_once_then_recovered_once() -> None:
    """A breach is reported at its breach_polls-th poll, not again while it lasts, and its recovery once."""
    tracker = BreachTracker(ProbesConfig(breach_polls=3))
    assert [tracker.update("ws1", LOAD) for _ in range(5)] == [
        [],
        [],
        [Change("breach", "load", LOAD["load"])],
        [],
        [],
    ]
    assert tracker.active("ws1") == LOAD
    assert tracker.update("ws1", {}) == [Change("recovered", "load", LOAD["load"])]
    assert tracker.update("ws1", {}) == []
    assert tracker.active("ws1") == {}


def test_an_interrupted_streak_starts_over() -> None:
    """A breach that clears before breach_polls is never reported, nor recovered, and counts again from 1."""
    tracker = BreachTracker(ProbesConfig(breach_polls=2))
    assert tracker.update("ws1", LOAD) == []
    assert tracker.update("ws1", {}) == []
    assert tracker.update("ws1", LOAD) == []
    assert tracker.update("ws1", LOAD) == [Change("breach", "load", LOAD["load"])]


def test_recovery_reports_the_last_reason() -> None:
    """The reason of a recovery is the last one seen, which may be newer than the reported one."""
    tracker = BreachTracker(ProbesConfig(breach_polls=1))
    assert tracker.update("ws1", {"disk": "disk 900 MB free < 1 GB"}) == [
        Change("breach", "disk", "disk 900 MB free < 1 GB")
    ]
    tracker.update("ws1", {"disk": "disk 700 MB free < 1 GB"})
    assert tracker.update("ws1", {}) == [Change("recovered", "disk", "disk 700 MB free < 1 GB")]


def test_an_unassessed_limit_neither_extends_nor_clears() -> None:
    """When a poll cannot judge a limit (df garbled), its streak and report stay as they were."""
    tracker = BreachTracker(ProbesConfig(breach_polls=2))
    disk = {"disk": "disk 512 MB free < 1 GB"}
    tracker.update("ws1", disk)
    assert tracker.update("ws1", {}, assessed={"load", "memory", "swap"}) == []
    assert tracker.update("ws1", disk) == [Change("breach", "disk", disk["disk"])]
    assert tracker.update("ws1", {}, assessed=set()) == []
    assert tracker.update("ws1", {}, assessed=KEYS) == [Change("recovered", "disk", disk["disk"])]


def test_hosts_are_tracked_apart_and_forgotten() -> None:
    """Each host has its own streaks; a forgotten host starts over without a recovery."""
    tracker = BreachTracker(ProbesConfig(breach_polls=2))
    tracker.update("ws1", LOAD)
    assert tracker.update("ws2", LOAD) == []
    assert tracker.update("ws1", LOAD) == [Change("breach", "load", LOAD["load"])]
    tracker.forget("ws1")
    assert tracker.update("ws1", {}) == []
    assert tracker.update("ws1", LOAD) == []


def test_unsupported_host_never_breaches() -> None:
    """A macOS host, polled again and again, produces no changes."""
    tracker = BreachTracker(ProbesConfig(breach_polls=1))
    probe = sample("macos")
    for _ in range(3):
        assert tracker.update("mac", breaches(probe, Rates(), CONFIG), assessed(probe, Rates())) == []


# --- hostile input ---------------------------------------------------------------------------------------

# Pieces of probe text, which reach the parsers' branches far more often than arbitrary Unicode does.
PIECES = [
    *"0123456789 .:%/-\t\n\r",
    "٣",
    " kB",
    "MemTotal:",
    "pswpin",
    "Filesystem 1024-blocks ",
    "/dev/sda1",
]
PIECES += ["\n--df\n", "\n--meminfo\n", "\n--loadavg\n", "uname Linux\n", "cpus 8\n", "probe-end\n"]
PROBE_TEXT = st.one_of(st.text(), st.lists(st.sampled_from(PIECES), max_size=120).map("".join))


@settings(max_examples=examples(300))
@given(text=PROBE_TEXT)
def test_parsers_raise_only_probe_parse_error(text: str) -> None:
    """Any text makes each parser return or raise ProbeParseError, never another exception."""
    for parser in (parse_loadavg, parse_meminfo, parse_vmstat, parse_df):
        try:
            parser(text)
        except ProbeParseError:
            pass


@settings(max_examples=examples(300))
@given(text=PROBE_TEXT)
def test_parse_block_never_raises_on_arbitrary_text(text: str) -> None:
    """Any text, with or without the markers around it, gives a sample (with problems), never an exception."""
    for candidate in (text, f"probe-begin\n{text}", f"probe-begin\nuname Linux\n{text}\nprobe-end\n"):
        probe = parse_block(candidate)
        assert isinstance(probe, ProbeSample) and all(isinstance(p, str) for p in probe.problems)
        breaches(probe, rates(probe, probe, 1.0), CONFIG)


@settings(max_examples=examples(200))
@given(data=st.data())
def test_parse_block_survives_mangled_fixture_blocks(data: st.DataObject) -> None:
    """Fixture blocks with lines dropped, repeated or garbled give a sample, never an exception."""
    name, pueue_dir = data.draw(st.sampled_from(ALL_TREES))
    lines = read_tree(TREES / name, pueue_dir).split("\n")
    garbage = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)
    kinds = st.sampled_from(["drop", "dup", "garble"])
    edits = st.lists(st.tuples(st.integers(0, len(lines) - 1), kinds), unique_by=lambda e: e[0])
    for index, edit in sorted(data.draw(edits, label="edits"), reverse=True):
        if edit == "drop":
            del lines[index]
        elif edit == "dup":
            lines.insert(index, lines[index])
        else:
            lines[index] = data.draw(garbage)
    probe = parse_block("\n".join(lines))
    assert isinstance(probe, ProbeSample)
