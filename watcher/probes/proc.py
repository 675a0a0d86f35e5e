"""Parsers of the probe block: the host-health lines the poll script prints beside pueue's state.

The block (see :data:`PROBE_SCRIPT`, which prints it) looks like::

    probe-begin
    uname Linux
    cpus 32
    --loadavg
    0.52 0.61 0.70 2/1234 56789
    --meminfo
    MemTotal:       65843012 kB
    ...
    --df
    Filesystem     1024-blocks      Used Available Capacity Mounted on
    /dev/nvme0n1p2   959786032 312345678 598765432      35% /
    probe-end

Each ``parse_*`` function reads one section and raises :class:`ProbeParseError` (and nothing else) when it
cannot. :func:`parse_block` never raises: a missing or garbled section leaves its values ``None`` and adds a
line to ``problems``. A host that is not Linux has no /proc: its sample is ``supported=False``, not an error.
:func:`read_tree` prints the same block from a fixture directory, so that tests read files, not hosts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from watcher.errors import ProbeParseError

BEGIN = "probe-begin"
END = "probe-end"

# What the poll script runs (POSIX sh) to print the block; it expects the shell variable `pueue_dir`, and
# takes `pw_os` and `pw_cpus` when set (a long-lived session asks once). The /proc files are read with the
# shell's own `read`, not cat or grep: a probe then costs the host one process (df), not six. Every step
# tolerates failure (a test before each read, stderr dropped): on macOS /proc is missing, and under `set -e`
# one failing probe must not cost the poll its pueue state.
PROBE_SCRIPT = """\
echo probe-begin
echo "uname ${pw_os-$(uname -s 2>/dev/null)}"
echo "cpus ${pw_cpus-$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)}"
echo --loadavg
if [ -r /proc/loadavg ]; then IFS= read -r x </proc/loadavg && printf '%s\\n' "$x"; fi
echo --meminfo
if [ -r /proc/meminfo ]; then while IFS= read -r x; do case $x in MemTotal:*|MemAvailable:*|SwapTotal:*|\\
SwapFree:*) printf '%s\\n' "$x";; esac; done </proc/meminfo; fi
echo --vmstat
if [ -r /proc/vmstat ]; then while IFS= read -r x; do case $x in "pswpin "*|"pswpout "*) \\
printf '%s\\n' "$x";; esac; done </proc/vmstat; fi
echo --df
df -Pk "${pueue_dir:-/}" 2>/dev/null || true
echo probe-end
"""

MEMINFO_KEYS = ("MemTotal", "MemAvailable", "SwapTotal", "SwapFree")
VMSTAT_KEYS = ("pswpin", "pswpout")

# re.ASCII throughout: without it \d accepts Arabic-Indic digits and \s the Unicode separators, which int()
# would then happily read. Counts are bounded to 20 digits: int() refuses more than 4300 anyway (3.11+).
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
# load1 load5 load15 running/total last-pid; the fourth field is required, so that a cut line is refused.
_LOADAVG = re.compile(
    rf"[ \t]*({_NUMBER})[ \t]+({_NUMBER})[ \t]+({_NUMBER})[ \t]+[0-9]+/[0-9]+(?:[ \t].*)?", re.ASCII
)
_MEMINFO_LINE = re.compile(r"([A-Za-z0-9_()]+):[ \t]*([0-9]{1,20})(?:[ \t]+(kB))?[ \t]*", re.ASCII)
_VMSTAT_LINE = re.compile(r"([a-z0-9_]+)[ \t]+([0-9]{1,20})[ \t]*", re.ASCII)
_DF_HEADER = re.compile(r"Filesystem[ \t]+([1-9][0-9]{0,8})-blocks[ \t]", re.ASCII)
# One df row once a wrapped device name is joined back: the device may hold spaces, the mount point too.
_DF_ROW = re.compile(
    r"(?P<device>\S.*?)[ \t]+(?P<total>[0-9]{1,20})[ \t]+(?P<used>[0-9]{1,20})[ \t]+"
    r"(?P<available>-?[0-9]{1,20})[ \t]+(?P<capacity>[0-9]{1,3}%|-)[ \t]+(?P<mount>/.*)",
    re.ASCII,
)
_BEGIN = re.compile(rf"^[ \t]*{BEGIN}[ \t\r]*$", re.MULTILINE)
_END = re.compile(rf"^[ \t]*{END}[ \t\r]*$", re.MULTILINE)
_HEADER_LINE = re.compile(r"([a-z]+)(?:[ \t]+(.*))?", re.ASCII)
_COUNT = re.compile(r"[0-9]{1,6}", re.ASCII)


@dataclass(frozen=True, slots=True)
class ProbeSample:
    """One host's health at one poll. Sizes are bytes; ``swap_*_pages`` are counters since boot.

    ``supported`` is False only when ``uname`` names a system other than Linux; a Linux host whose block is
    missing or garbled stays supported, with None values and one line per fault in ``problems``.
    """

    supported: bool
    system: str | None = None
    cpus: int | None = None
    load1: float | None = None
    load5: float | None = None
    load15: float | None = None
    mem_total: int | None = None
    mem_available: int | None = None
    swap_total: int | None = None
    swap_free: int | None = None
    swap_in_pages: int | None = None
    swap_out_pages: int | None = None
    disk_total: int | None = None
    disk_available: int | None = None
    problems: tuple[str, ...] = ()


def _lines(text: str) -> list[str]:
    # split("\n"), not splitlines(): the latter also splits on \x1c, \x85, \u2028, which /proc never holds.
    return [line.rstrip("\r") for line in text.split("\n") if line.strip(" \t\r")]


def _excerpt(text: str) -> str:
    return repr(text[:60] + ("…" if len(text) > 60 else ""))


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """``/proc/loadavg`` → (load1, load5, load15)."""
    lines = _lines(text)
    if len(lines) != 1 or not (match := _LOADAVG.fullmatch(lines[0])):
        raise ProbeParseError(f"loadavg: cannot read {_excerpt(text)}")
    return float(match[1]), float(match[2]), float(match[3])


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` lines → {key: bytes}; values without the ``kB`` unit (``HugePages_*``) are counts."""
    values: dict[str, int] = {}
    for line in _lines(text):
        if not (match := _MEMINFO_LINE.fullmatch(line)):
            raise ProbeParseError(f"meminfo: cannot read line {_excerpt(line)}")
        key, number, unit = match.groups()
        # Only HugePages_* are counts; a size without its unit is a line cut short ("MemAvailable: 4012").
        if not unit and not key.startswith("HugePages_"):
            raise ProbeParseError(f"meminfo: {key} has no unit (cut short?)")
        if key in values:
            raise ProbeParseError(f"meminfo: {key} appears twice")
        values[key] = int(number) * 1024 if unit else int(number)
    return values


def parse_vmstat(text: str) -> dict[str, int]:
    """``/proc/vmstat`` lines → {counter: value}."""
    values: dict[str, int] = {}
    for line in _lines(text):
        if not (match := _VMSTAT_LINE.fullmatch(line)):
            raise ProbeParseError(f"vmstat: cannot read line {_excerpt(line)}")
        key, number = match.groups()
        if key in values:
            raise ProbeParseError(f"vmstat: {key} appears twice")
        values[key] = int(number)
    return values


@dataclass(frozen=True, slots=True)
class _DfRow:
    lines: tuple[str, ...]  # as printed: two lines when a long device name was wrapped
    total_blocks: int
    available_blocks: int
    mount: str


def _df_rows(text: str) -> tuple[int, list[_DfRow]]:
    """``df -P`` output → (block size, rows), joining the rows that a long device name wrapped."""
    lines = _lines(text)
    if not lines or not (header := _DF_HEADER.match(lines[0])):
        raise ProbeParseError(f"df: no 'Filesystem N-blocks' header in {_excerpt(text)}")
    block_size = int(header[1])
    rows: list[_DfRow] = []
    pending: list[str] = []
    for line in lines[1:]:
        pending.append(line)
        joined = " ".join(part.strip(" \t") for part in pending)
        if match := _DF_ROW.fullmatch(joined):
            available = max(0, int(match["available"]))  # GNU df prints it negative once reserve is used
            rows.append(_DfRow(tuple(pending), int(match["total"]), available, match["mount"]))
            pending = []
        elif len(pending) > 1 or len(line.split()) > 1:
            # A wrapped row is a lone device name, then the numbers; anything else is garbled.
            raise ProbeParseError(f"df: cannot read row {_excerpt(joined)}")
    if pending:
        raise ProbeParseError(f"df: the row {_excerpt(pending[0])} has no numbers")
    return block_size, rows


def parse_df(text: str) -> tuple[int, int]:
    """``df -Pk DIR`` output (one filesystem) → (total bytes, available bytes)."""
    block_size, rows = _df_rows(text)
    if len(rows) != 1:
        raise ProbeParseError(f"df: expected one filesystem, got {len(rows)}")
    return rows[0].total_blocks * block_size, rows[0].available_blocks * block_size


def _section(sections: dict[str, str], name: str, problems: list[str]) -> str | None:
    """The section's text, or None with a problem when the block lacks it or it is empty."""
    text = sections.get(name)
    if text is None or not text.strip():
        problems.append(f"{name}: {'missing' if text is None else 'empty'}")
        return None
    return text


def parse_block(text: str) -> ProbeSample:
    """The probe block (it may sit among other output) → a sample; never raises."""
    begin = _BEGIN.search(text)
    if begin is None:
        return ProbeSample(supported=True, problems=("no probe block in the output",))
    problems: list[str] = []
    rest = text[begin.end() :]
    if end := _END.search(rest):
        rest = rest[: end.start()]
    else:
        problems.append("the probe block is truncated (no probe-end)")
        if not rest.endswith("\n"):
            rest = rest[: rest.rfind("\n") + 1]  # the last line may have been cut inside a number
    headers: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in rest.split("\n"):
        item = line.strip(" \t\r")
        if item.startswith("--"):
            name = item[2:]
            if name in sections:
                problems.append(f"section {_excerpt(name)} appears twice; the first is kept")
                current = []
            else:
                current = sections[name] = []
        elif current is not None:
            current.append(line)
        elif match := _HEADER_LINE.fullmatch(item):
            headers.setdefault(match[1], match[2] or "")
        elif item:
            problems.append(f"cannot read header line {_excerpt(item)}")
    system = headers.get("uname", "").strip(" \t") or None
    if system is not None and system != "Linux":
        # No /proc, and df's columns differ: the probes do not apply. Not an error.
        return ProbeSample(supported=False, system=system[:40])
    if system is None:
        problems.append("uname: missing")
    return _linux_sample(system, headers, {k: "\n".join(v) for k, v in sections.items()}, problems)


def _linux_sample(
    system: str | None, headers: dict[str, str], sections: dict[str, str], problems: list[str]
) -> ProbeSample:
    cpus: int | None = None
    cpus_text = headers.get("cpus", "").strip(" \t")
    if _COUNT.fullmatch(cpus_text) and int(cpus_text) > 0:
        cpus = int(cpus_text)
    else:
        problems.append(f"cpus: cannot read {_excerpt(cpus_text)}")
    load: tuple[float | None, float | None, float | None] = (None, None, None)
    mem: dict[str, int] = {}
    vm: dict[str, int] = {}
    disk: tuple[int | None, int | None] = (None, None)
    try:
        if (loadavg := _section(sections, "loadavg", problems)) is not None:
            load = parse_loadavg(loadavg)
    except ProbeParseError as exc:
        problems.append(str(exc))
    try:
        if (meminfo := _section(sections, "meminfo", problems)) is not None:
            mem = parse_meminfo(meminfo)
            # Kernels before 3.14 have no MemAvailable: the memory limit is then not checked.
            problems.extend(f"meminfo: no {key}" for key in MEMINFO_KEYS if key not in mem)
    except ProbeParseError as exc:
        problems.append(str(exc))
    try:
        if (vmstat := _section(sections, "vmstat", problems)) is not None:
            vm = parse_vmstat(vmstat)
            problems.extend(f"vmstat: no {key}" for key in VMSTAT_KEYS if key not in vm)
    except ProbeParseError as exc:
        problems.append(str(exc))
    try:
        if (df := _section(sections, "df", problems)) is not None:
            disk = parse_df(df)
    except ProbeParseError as exc:
        problems.append(str(exc))
    return ProbeSample(
        supported=True,
        system=system,
        cpus=cpus,
        load1=load[0],
        load5=load[1],
        load15=load[2],
        mem_total=mem.get("MemTotal"),
        mem_available=mem.get("MemAvailable"),
        swap_total=mem.get("SwapTotal"),
        swap_free=mem.get("SwapFree"),
        swap_in_pages=vm.get("pswpin"),
        swap_out_pages=vm.get("pswpout"),
        disk_total=disk[0],
        disk_available=disk[1],
        problems=tuple(problems),
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _df_for(text: str, pueue_dir: str) -> str:
    """What ``df -Pk pueue_dir`` prints, out of a whole ``df -Pk`` listing: the row of the deepest mount."""
    lines = _lines(text)
    try:
        _, rows = _df_rows(text)
    except ProbeParseError:
        return text  # a garbled listing stays garbled, for the parser to report
    target = PurePosixPath(pueue_dir)
    mounted = [row for row in rows if target.is_relative_to(row.mount)]
    if not mounted:
        return lines[0] + "\n" if lines else ""
    deepest = max(mounted, key=lambda row: len(PurePosixPath(row.mount).parts))
    return "\n".join((lines[0], *deepest.lines)) + "\n"


def read_tree(root: Path, pueue_dir: str = "/") -> str:
    """The block :data:`PROBE_SCRIPT` would print on a host whose files are under ``root``.

    ``root/proc/{loadavg,meminfo,vmstat}`` are copies of the host's files (whole: they are filtered as the
    script filters them), ``root/uname`` and ``root/cpus`` what ``uname -s`` and ``getconf`` print, and
    ``root/df.txt`` the output of ``df -Pk`` (all filesystems: the row of ``pueue_dir`` is picked, as df
    picks it).
    Missing files print nothing, as a failing command does.
    """
    keep_mem = re.compile(r"^(MemTotal|MemAvailable|SwapTotal|SwapFree):")
    keep_vm = re.compile(r"^(pswpin|pswpout) ")
    meminfo = [line for line in _read(root / "proc" / "meminfo").splitlines() if keep_mem.match(line)]
    vmstat = [line for line in _read(root / "proc" / "vmstat").splitlines() if keep_vm.match(line)]
    parts = [
        BEGIN,
        f"uname {_read(root / 'uname').strip()}",
        f"cpus {_read(root / 'cpus').strip()}",
        "--loadavg",
        _read(root / "proc" / "loadavg").rstrip("\n"),
        "--meminfo",
        *meminfo,
        "--vmstat",
        *vmstat,
        "--df",
        _df_for(_read(root / "df.txt"), pueue_dir).rstrip("\n"),
        END,
    ]
    return "\n".join(part for part in parts if part) + "\n"
