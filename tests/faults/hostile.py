"""Hostile strings: what a compromised or careless host can put into pueue's JSON, and what a careless or
malicious configuration can hold.

Real pueue accepts any string as a group name, a label, a command or a path (``pueue group add NAME`` and
``pueue add`` take clap ``String`` arguments, and the daemon's group handler only checks that the name is not
taken: ``pueue/src/daemon/network/message_handler/group.rs``). A NUL cannot travel in a command-line argument,
but a client speaking the socket protocol (pueue_lib) can still send it. So everything here is a value that a
pueue state file can really hold.
"""

from __future__ import annotations

from pathlib import Path

#: Mentions and links as Slack parses them in ``mrkdwn`` text (https://api.slack.com/reference/surfaces/formatting).
SLACK = [
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<@U123ABC>",
    "<#C1|general>",
    "<!subteam^S123>",
    "<https://evil.example|click me>",
    "@channel @here",
]

#: Slack's (and common) markdown.
MARKDOWN = [
    "*bold*",
    "_italic_",
    "~strike~",
    "```block```",
    "`tick`",
    "> quoted",
    "[x](https://evil.example)",
]

#: Terminal escapes and control characters: colours, an OSC 8 hyperlink, a screen clear, C1 controls, a
#: carriage return that overwrites the line, bells and backspaces, bidi overrides.
TERMINAL = [
    "\x1b[31mred\x1b[0m",
    "\x1b]8;;https://evil.example\x07link\x1b]8;;\x07",
    "\x1b[2J\x1b[Hclear",
    "\x9b31mC1-CSI",
    "\x1b]0;title\x07",
    "over\rwrite",
    "bell\x07\x08\x08",
    "tab\tand\vvt\ffeed",
    "line\nbreak",
    "\u202eevil-rtl",
    "\u2028sep\u2029",
]


def shell(marker: Path) -> list[str]:
    """Shell metacharacters that would create a file under ``marker`` if anything ever ran them in a shell
    (``marker`` must hold no space and no quote)."""
    m = str(marker)
    return [
        f"$(touch {m}/dollar)",
        f"`touch {m}/backtick`",
        f"x; touch {m}/semicolon",
        f"x | touch {m}/pipe",
        f"x && touch {m}/and",
        f"x' ; touch {m}/single '",
        f'x" ; touch {m}/double "',
        f"x\ntouch {m}/newline",
        f"$(touch${{IFS}}{m}/ifs)",
        f"x > {m}/redirect",
        f"-g x; touch {m}/dash",
        f"${{PATH:+$(touch {m}/expansion)}}",
    ]


def marker_files(marker: Path) -> list[Path]:
    """Every file under ``marker`` (nothing may ever be there)."""
    return sorted(p for p in marker.rglob("*")) if marker.exists() else []


#: Values for SQL identifiers (a check's table, columns, database) that must be refused.
SQL_IDENTIFIERS = [
    "t; DROP TABLE x",
    "a` OR 1=1 --",
    "bars`; DROP TABLE bars; --",
    "x' OR '1'='1",
    'x" OR "1"="1',
    "bars -- comment",
    "bars/* c */",
    "bars\n",
    "bars\x00",
    "b\u0430rs",  # Cyrillic a: a look-alike of "bars"
    "ｂａｒｓ",  # full-width letters
    "bars\u200b",  # a zero-width space
    "٣bars",  # an Arabic-Indic digit
    "",
    "a" * 200,
    "db.t.x",
    "db..t",
]


def one_megabyte(seed: str) -> str:
    """A string of about 1 MB (bytes as UTF-8), led by ``seed`` and mixing escapes in."""
    chunk = f"{seed}<!channel>\x1b[31m*x*"
    return (chunk * (1_048_576 // len(chunk.encode()) + 1))[:1_048_576]
