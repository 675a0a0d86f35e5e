"""The Slack sink: one incoming-webhook message per batch, Block Kit with a plain ``text`` fallback.

Layout: a ``header`` block, then one ``section`` per event (mrkdwn), in the batch's order.

Slack's limits, and what happens at each (https://api.slack.com/reference/block-kit):

* at most 50 blocks: with more than 49 events, 48 are shown and the 50th block says "… and N more events";
* a header's text ≤ 150 characters, a section's text ≤ 3000: each piece of remote text has a bound of its
  own (a label 100 characters, a summary 600), counted after escaping and cut between entities, never
  inside an ``&amp;`` or a code span; labels that no longer fit are left out whole, and counted in "… and N
  more";
* a phase's failed labels: at most 20 are listed, then "… and N more", where N counts every failed task of
  the phase, also those the phase record did not keep a label of.

Everything that comes from a host (group names, task labels, summaries, errors) is untrusted. Slack reads
``<…>`` as mentions and links (``<!channel>``, ``<@U123>``, ``<http://x|y>``), so ``&``, ``<`` and ``>`` are
always written as ``&amp;``, ``&lt;``, ``&gt;`` (Slack's escaping rules). Before that, every piece of remote
text goes through :func:`watcher.sanitize.defuse`: line breaks become spaces, control, bidi and zero-width
characters are dropped, a mention's ``@`` becomes ``＠`` (``@channel``, ``@here``, ``@alice``), and nothing
is a link any more: ``http://x`` reads ``http:∕∕x``, ``evil.example`` and ``bob@evil.example`` get a
``․`` for their dots, ``mailto:`` a ``∶`` (all look-alikes, one character for one). Identifiers (group,
labels) go in inline code, where no formatting applies; in free text the formatting characters ``*``, ``~``
and the backtick become look-alikes, ``_`` at a word's edge too (``snake_case`` stays), so remote text can
neither format nor quote. The host's name is ours (the configuration's), and is shown as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import httpx
import msgspec

from watcher.alerts._http import HttpTarget
from watcher.alerts.base import severity
from watcher.alerts.config import SlackConfig
from watcher.records import Event
from watcher.sanitize import defuse

HEADER_MAX = 150
SECTION_MAX = 3000
BLOCKS_MAX = 50
TEXT_MAX = 3000  # Slack cuts `text` at 40 000; a notification shows far less
LABELS_SHOWN = 20
_LABEL_MAX = 100  # one label, before escaping
_SUMMARY_MAX = 600

_TITLES = {
    "phase.flood": "Phase alerts folded",
    "check.failed": "Check failed",
    "check.warned": "Check warning",
    "check.errored": "Check error",
    "check.recovered": "Check recovered",
    "host.down": "Host down",
    "host.up": "Host up",
    "probe.breach": "Probe breach",
    "probe.recovered": "Probe recovered",
    "gate.held": "Gate held",
    "gate.started": "Gate started",
    "state.cleaned": "State cleaned",
}
_GOOD = {"check.recovered", "host.up", "probe.recovered", "gate.started"}
_ICONS = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}

_EDGE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_PARTIAL_ENTITY = re.compile(r"&[a-z]*$")
# Remote text is read up to this many characters: more than any bound below needs, once escaped and cut.
_READ_MAX = 4 * SECTION_MAX


def escape(text: str) -> str:
    """Slack's three control characters as entities; nothing else is escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    """One line, at most ``limit`` characters *after* escaping, cut between entities, never inside one."""
    text = " ".join(text.split())
    if len(escape(text)) <= limit:
        return escape(text)
    out, size = [], 0
    for char in text:
        piece = escape(char)
        if size + len(piece) > limit - 1:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out).rstrip() + "…"


def plain(value: object, limit: int = _SUMMARY_MAX) -> str:
    """Untrusted free text as inert mrkdwn: one line, escaped, no formatting, no mention, no link."""
    text = defuse(str(value)[:_READ_MAX]).replace("`", "ˋ").replace("*", "∗").replace("~", "∼")
    return _cut(_EDGE_UNDERSCORE.sub("＿", text), limit)


def code(value: object, limit: int = _LABEL_MAX, *, trusted: bool = False) -> str:
    """An identifier as inline code (no formatting applies inside; a backtick cannot end it). Unless it is
    ``trusted`` (ours, not a host's), it is defused first: whether Slack links a URL inside code is not
    documented."""
    text = str(value)[:_READ_MAX]
    text = _cut((text if trusted else defuse(text)).replace("`", "ˋ"), limit)
    return f"`{text}`" if text else "(empty)"


def _title(event: Event) -> str:
    if event.event == "phase.completed":
        return "Phase completed" if event.data.get("outcome") == "success" else "Phase failed"
    return _TITLES.get(event.event, event.event)


def _icon(event: Event) -> str:
    good = event.event in _GOOD or (
        event.event == "phase.completed" and event.data.get("outcome") == "success"
    )
    return ":white_check_mark:" if good else _ICONS[severity(event)]


def _failed_total(event: Event) -> int:
    labels = event.data.get("failed_labels") or []
    counts = event.data.get("counts") or {}
    failed = sum(n for k, n in counts.items() if k not in ("success", "removed") and isinstance(n, int))
    return max(len(labels), failed)


def _labels_line(event: Event, budget: int) -> str:
    total = _failed_total(event)
    if not total:
        return ""
    labels = [str(label) for label in event.data.get("failed_labels") or []]
    head = f"*Failed ({total}):* "
    shown: list[str] = []
    length = len(head)
    for label in labels[:LABELS_SHOWN]:
        piece = code(label)
        if length + len(piece) + len(", … and 99999 more") > budget:
            break
        shown.append(piece)
        length += len(piece) + 2
    if not shown:
        return f"*Failed tasks:* {total}"
    rest = total - len(shown)
    return head + ", ".join(shown + ([f"… and {rest} more"] if rest else []))


def section_text(event: Event) -> str:
    """The mrkdwn text of one event's section, at most :data:`SECTION_MAX` characters."""
    where = code(event.host, trusted=True) + (f" / {code(event.group)}" if event.group is not None else "")
    lines = [f"{_icon(event)} *{_title(event)}* · {where}"]
    summary = event.data.get("summary")
    if summary:
        lines.append(plain(summary))
    if event.event == "phase.completed" and event.data.get("outcome") != "success":
        budget = SECTION_MAX - sum(len(line) + 1 for line in lines) - 40
        line = _labels_line(event, budget)
        if line:
            lines.append(line)
    lines.append(f"at {event.at.strftime('%Y-%m-%d %H:%M:%S %Z').strip()}")
    text = "\n".join(lines)
    # Every piece above is bounded; this only guards against a change that forgets to bound a new one.
    return text if len(text) <= SECTION_MAX else _PARTIAL_ENTITY.sub("", text[: SECTION_MAX - 1]) + "…"


def _header(events: Sequence[Event]) -> str:
    if len(events) == 1:
        text = f"{_title(events[0])}: {events[0].host}"
    else:
        worst = [severity(e) for e in events]
        parts = [f"{worst.count(s)} {s}" for s in ("critical", "warning") if s in worst]
        text = f"pueue-watcher: {len(events)} events" + (f" ({', '.join(parts)})" if parts else "")
    # The header is plain_text (no mentions, no entities): it holds only event counts and a configured host
    # name, no remote text.
    return text if len(text) <= HEADER_MAX else text[: HEADER_MAX - 1] + "…"


def _fallback(events: Sequence[Event]) -> str:
    """The notification text: the summaries, as many whole ones as fit."""
    pieces = [f"{_title(e)}: {plain(e.data.get('summary') or e.host, 300)}" for e in events]
    if len(events) <= 1:
        return pieces[0] if pieces else "pueue-watcher: no events"
    text = f"{len(events)} events. {pieces[0]}"
    for piece in pieces[1:]:
        if len(text) + len(piece) + 4 > TEXT_MAX:
            return text + "; …"
        text += f"; {piece}"
    return text


def payload(events: Sequence[Event]) -> dict[str, Any]:
    """The incoming-webhook JSON for a batch: ``text``, ``blocks``, and link previews off."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _header(events), "emoji": True}}
    ]
    room = BLOCKS_MAX - 1
    shown = events if len(events) <= room else events[: room - 1]
    for event in shown:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": section_text(event)}})
    if len(shown) < len(events):
        more = f"… and {len(events) - len(shown)} more events"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": more}})
    return {"text": _fallback(events), "blocks": blocks, "unfurl_links": False, "unfurl_media": False}


class SlackSink:
    kind = "slack"

    def __init__(self, config: SlackConfig, client: httpx.AsyncClient | None = None) -> None:
        self.name = config.name
        self._target = HttpTarget(f"slack {config.name!r}", config.url, config.timeout, client)

    async def deliver(self, events: Sequence[Event]) -> None:
        if not events:
            return
        content = msgspec.json.encode(payload(events))
        await self._target.post(content, {"Content-Type": "application/json"})

    async def close(self) -> None:
        await self._target.close()
