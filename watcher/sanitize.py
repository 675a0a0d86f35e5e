"""Text from a watched host made fit for people: bounded, visible, and inert in chat.

A hostile host names its groups, labels its tasks and words its errors as it likes, and chat tools act on
text: Slack pings ``<!channel>`` (and, with ``link_names``, ``@here`` or ``@alice``), links ``<http://x|y>``,
``http://x``, ``evil.example`` and ``bob@evil.example``; a bidi override makes ``gpu-01/train`` read as
something else; a zero-width space inside ``@channel`` slips past a check for ``@channel``. Alertmanager's own
Slack, e-mail and Teams templates escape none of it. So before remote text reaches a sink:

``visible``
    Line breaks and tabs (C0 whitespace, U+0085, U+2028, U+2029) become spaces. Every other control
    character (Cc), format character (Cf: the bidi embeddings, overrides and isolates U+202A–U+202E,
    U+2066–U+2069, the marks U+200E, U+200F, U+061C, the zero-width U+200B–U+200D, U+2060, U+FEFF, the soft
    hyphen, tag characters…) and lone surrogate (Cs) is dropped. This runs first, so that what the rules
    below look for cannot be hidden from them.
``defuse`` (mentions and links; ``<`` ``>`` are left to the sink's own escaping)
    * an ``@`` that starts a word, or stands before ``channel``, ``here`` or ``everyone`` in any case,
      becomes ``＠`` (U+FF20 FULLWIDTH COMMERCIAL AT): ``@here`` and ``@alice`` ping no one, ``alice@gpu``
      stays as it is;
    * ``://`` becomes ``:∕∕`` (U+2215 DIVISION SLASH), and ``mailto:``, ``tel:``, ``sms:``, ``callto:``,
      ``slack:``, ``javascript:``, ``data:``, ``file:`` before a non-space get ``∶`` (U+2236 RATIO) for
      their colon: no scheme is recognised;
    * with ``domains``, a dot between a letter or digit and a letter becomes ``․`` (U+2024 ONE DOT LEADER):
      ``evil.example`` and ``bob@evil.example`` are no longer a domain or an address (``3.5`` stays).
    Every replacement is one character for one, and each look-alike reads the same.
``inert``
    ``visible`` and ``defuse`` with domains, ``<`` ``>`` as ``‹`` ``›`` (U+2039, U+203A), runs of spaces as
    one, cut to a bound with ``…``: for sinks that do no escaping of their own (Alertmanager annotations).
``label``
    A value that names something (an Alertmanager label): ``visible``, ``defuse`` without domains, ``‹›``.
    Labels are alert identities, which silences and routes match and which a resolve must repeat
    exactly, so a clean value up to the bound is kept as it is (dots too: ``exp.v2`` and
    ``gpu-01.example.com`` stay typeable), the same input always gives the same value, and a value that
    had to change or be cut gets ``~`` and 8 hex digits of the SHA-256 of the whole original
    (``prefix~a1b2c3d4``): two groups that differ only after the cut, or only in what was removed,
    stay two alerts. The metrics endpoint labels groups with the same function, so a series and an alert
    of one group carry the same value.

Every function reads at most a bounded prefix of its input (besides the hash), so a 1 MB name costs no more
than a short one.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

LABEL_MAX = 128
_HASH_HEX = 8
_SPACES = frozenset("\t\n\v\f\r\x1c\x1d\x1e\x1f\x85\u2028\u2029")
_HIDDEN = frozenset({"Cc", "Cf", "Cs"})
_AT = re.compile(r"(?<!\w)@|@(?=(?:channel|here|everyone))", re.IGNORECASE)
_SCHEME = re.compile(r"\b(mailto|tel|sms|callto|slack|javascript|data|file):(?=\S)", re.IGNORECASE)
_DOMAIN_DOT = re.compile(r"(?<=[^\W_])\.(?=[^\W\d_])")
_ANGLES = str.maketrans("<>", "\u2039\u203a")


def visible(text: str) -> str:
    """``text`` with line breaks as spaces and every control, format (bidi, zero-width) and surrogate
    character dropped."""
    if text.isprintable():  # the common case, in C: no control, format, separator or surrogate character
        return text
    return "".join(" " if ch in _SPACES else "" if unicodedata.category(ch) in _HIDDEN else ch for ch in text)


def defuse(text: str, *, domains: bool = True) -> str:
    """``visible(text)`` with no ``@`` mention and no link left in it (see the module's docstring)."""
    text = _AT.sub("\uff20", visible(text)).replace("://", ":\u2215\u2215")
    text = _SCHEME.sub("\\1\u2236", text)
    return _DOMAIN_DOT.sub("\u2024", text) if domains else text


def _prefix(text: str, limit: int) -> str:
    """A prefix long enough to fill ``limit`` characters in all but contrived cases (most invisible
    characters), short enough that a megabyte of input costs nothing."""
    return text[: 4 * limit + 64]


def inert(text: str, limit: int) -> str:
    """Untrusted free text for a sink that escapes nothing: one line, at most ``limit`` characters."""
    text = " ".join(defuse(_prefix(text, limit)).translate(_ANGLES).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def digest(text: str) -> str:
    """8 hex digits of the SHA-256 of ``text``: tells long or altered values apart, the same on every run
    and host."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX]


def label(value: str, limit: int = LABEL_MAX) -> str:
    """An identity value, at most ``limit`` characters: ``value`` itself when it is short and clean, else
    its safe form, cut to fit, then ``~`` and the :func:`digest` of all of ``value``."""
    safe = defuse(_prefix(value, limit), domains=False).translate(_ANGLES)
    if safe == value and len(value) <= limit:
        return value
    suffix = "~" + digest(value)
    return safe[: limit - len(suffix)] + suffix
