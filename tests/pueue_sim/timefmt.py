"""Timestamps the way pueue's `chrono::DateTime<Local>` (de)serialises them.

pueue keeps every timestamp as `DateTime<Local>` and serde writes it in RFC 3339 form:

* the fraction has 9 digits, but whole zero groups are dropped, so it has 0, 3, 6 or 9 digits
  (`.418273916`, `.201336`, `.500`, nothing);
* the offset is `Z` for UTC and `±HH:MM` otherwise;
* the offset is the one of the *process that serialises*: the daemon's time zone in `state.json`,
  the `pueue` client's time zone in `pueue status --json` (chrono converts to `Local` when it
  deserialises), so the same instant can come out with different offsets.

Internally the simulator keeps every timestamp as an `int` of nanoseconds since the epoch, which is
exactly the precision chrono has. `time.localtime()` honours the `TZ` environment variable of the
process, which is how the client's and the daemon's zones differ.
"""

from __future__ import annotations

import calendar
import datetime
import re
import time

NS = 1_000_000_000

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:?\d{2})$"
)


def now_ns() -> int:
    """The current instant (`Local::now()`), in nanoseconds."""
    return time.time_ns()


def local_offset(seconds: int) -> int:
    """UTC offset in seconds of this process's local time zone at `seconds` since the epoch."""
    return time.localtime(seconds).tm_gmtoff


Zone = int | datetime.tzinfo | None


def zone_offset(seconds: int, zone: Zone) -> int:
    """UTC offset at an instant: `None` = this process's local zone, an `int` = fixed offset in
    seconds, a `tzinfo` (e.g. `zoneinfo.ZoneInfo("Europe/Berlin")`) = that zone's rules."""
    if zone is None:
        return local_offset(seconds)
    if isinstance(zone, int):
        return zone
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    delta = zone.utcoffset(moment.astimezone(zone))
    return int(delta.total_seconds()) if delta is not None else 0


def format_ts(ns: int, zone: Zone = None) -> str:
    """Format like chrono: `2024-11-12T08:01:12.418273916+01:00`, `2025-06-10T08:14:47.201336Z`.

    `zone` is `None` for the process's local zone at that instant (which follows DST, so two
    values of one file can carry different offsets), or see `zone_offset`.
    """
    secs, frac = divmod(ns, NS)
    offset = zone_offset(secs, zone)
    t = time.gmtime(secs + offset)
    text = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    if frac:
        if frac % 1_000_000 == 0:
            text += f".{frac // 1_000_000:03d}"
        elif frac % 1_000 == 0:
            text += f".{frac // 1_000:06d}"
        else:
            text += f".{frac:09d}"
    return text + format_offset(offset)


def format_offset(offset: int) -> str:
    """`Z` for UTC, otherwise `±HH:MM` (`±HH:MM:SS` for the odd historical zone with seconds)."""
    if offset == 0:
        return "Z"
    sign = "+" if offset > 0 else "-"
    minutes, seconds = divmod(abs(offset), 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{sign}{hours:02d}:{minutes:02d}"
    if seconds:
        text += f":{seconds:02d}"
    return text


def parse_ts(text: str) -> int:
    """Parse an RFC 3339 timestamp into nanoseconds since the epoch (the instant; the offset is lost,
    exactly as chrono loses it when it converts to `Local`)."""
    m = _RFC3339.match(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac = (m.group(7) or "")[:9].ljust(9, "0")
    zone = m.group(8)
    if zone in ("Z", "z"):
        offset = 0
    else:
        digits = zone[1:].replace(":", "")
        offset = int(digits[:2]) * 3600 + int(digits[2:4]) * 60
        if zone[0] == "-":
            offset = -offset
    secs = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset
    return secs * NS + int(frac)
