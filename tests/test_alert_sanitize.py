"""watcher/sanitize.py: remote text made bounded, visible and inert; label values that keep their identity."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import examples
from watcher.sanitize import LABEL_MAX, defuse, inert, label, visible

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
FRAGMENTS = [
    "<!channel>", "<!here>", "<@U123>", "<#C1|x>", "<http://evil.example|click>", "@channel", "@HERE",
    "@everyone", "@alice", "alice@gpu", "bob@evil.example", "http://evil.example/x", "https://a.b",
    "mailto:bob@x.y", "www.foo.com", "evil.example", "3.5", "train", "exp.v2", "\x1b[2J", "\n", "\r\n", "\t",
    "\x00", "\x85", "\u2028", "\ud800", *BIDI, *ZERO_WIDTH, "@", "<", ">", ":", "/", ".", "~", "…",
]  # fmt: skip
# Remote text as a hostile host would write it: its fragments, spliced with anything at all.
hostile = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=40).map("".join)

MENTION = re.compile(r"[<>]|(?<!\w)@|@(?i:channel|here|everyone)")
LINK = re.compile(r"://|(?i:\b(?:mailto|tel|sms|callto|slack|javascript|data|file):\S)|[^\W_]\.[^\W\d_]")


def hidden(text: str) -> list[str]:
    """The control, format (bidi, zero-width) and surrogate characters in ``text``."""
    return [ch for ch in text if unicodedata.category(ch) in ("Cc", "Cf", "Cs") or ch in "\u2028\u2029"]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("<!channel> please", "‹!channel› please"),
        ("ping <@U123>", "ping ‹＠U123›"),
        ("@channel @Here @everyone", "＠channel ＠Here ＠everyone"),
        ("@\u200bchannel", "＠channel"),  # a zero-width space does not hide a mention: it is dropped first
        ("x@channel", "x＠channel"),
        ("alice@gpu-01", "alice@gpu-01"),
        ("see http://evil.example/x", "see http:∕∕evil․example/x"),
        ("mail bob@evil.example", "mail bob@evil․example"),
        ("mailto:bob", "mailto∶bob"),
        ("www.foo.com", "www․foo․com"),
        ("loss 3.5 at v1.2", "loss 3.5 at v1.2"),
        ("a\u202eevil\u202c\nb\tc", "aevil b c"),
        ("\x1b[2Jwiped", "[2Jwiped"),
    ],
)
def test_inert_text_keeps_its_words_and_loses_its_powers(raw: str, shown: str) -> None:
    """Each documented rule, on one example: mentions, links, bidi, zero-width and control characters."""
    assert inert(raw, 200) == shown


def test_defuse_leaves_angles_to_the_sink_and_dots_on_request() -> None:
    """``defuse`` keeps ``<`` ``>`` (Slack escapes them itself); ``domains=False`` keeps dots."""
    assert defuse("<!here> a.example") == "<!here> a․example"
    assert defuse("gpu-01.example.com", domains=False) == "gpu-01.example.com"


@pytest.mark.parametrize(
    "name", ["train", "exp.v2", "gpu-01.example.com", "alice@gpu", "a b", "ü-λ", "x" * 128]
)
def test_a_clean_label_value_is_kept_as_it_is(name: str) -> None:
    """Identities that silences and routes match stay themselves, dots and all."""
    assert label(name) == name


def test_label_values_that_change_get_a_stable_hash_of_the_original() -> None:
    """A long name is cut with ``~`` and 8 hex digits; a cleaned one too; the digits are SHA-256's."""
    assert label("g" * 1000) == "g" * 119 + "~d924684f"
    assert label("<!channel>") == "‹!channel›~5ae1671c"
    assert label("a\u200bb") != label("ab") == "ab"
    assert label("\u202e") == "~" + label("\u202e")[1:] and len(label("\u202e")) == 9


@settings(max_examples=examples(300), deadline=None)
@given(raw=hostile, limit=st.integers(10, 600))
def test_inert_is_bounded_visible_and_inert_for_any_text(raw: str, limit: int) -> None:
    """Whatever the host writes: at most ``limit`` characters, nothing hidden, no mention, no link."""
    out = inert(raw, limit)
    assert len(out) <= limit
    assert not hidden(out), out
    assert not MENTION.search(out), out
    assert not LINK.search(out), out
    assert out == inert(raw, limit)


@settings(max_examples=examples(300), deadline=None)
@given(raw=hostile, repeat=st.integers(1, 300))
def test_label_is_bounded_visible_without_mentions_and_deterministic(raw: str, repeat: int) -> None:
    """Any name, up to tens of kB: a label of at most 128 characters, nothing hidden, no mention, stable."""
    name = raw * repeat
    value = label(name)
    assert len(value) <= LABEL_MAX
    assert not hidden(value), value
    assert not MENTION.search(value), value
    assert "://" not in value
    assert value == label(name)
    assert value == name or re.search(r"~[0-9a-f]{8}$", value)


@settings(max_examples=examples(200), deadline=None)
@given(head=hostile, a=hostile, b=hostile)
def test_distinct_names_get_distinct_labels(head: str, a: str, b: str) -> None:
    """Two names that share a long beginning, or differ only in what is removed, stay two labels."""
    long_head = (head or "x") * (LABEL_MAX // max(1, len(head)) + 1)
    for first, second in [(long_head + a, long_head + b), (a, b)]:
        if first != second:
            assert label(first) != label(second), (first, second)


def test_a_megabyte_of_text_is_read_through_a_bounded_prefix() -> None:
    """1 MB of zero-width characters and mentions: the results stay small (the prefix is what is read)."""
    big = ("<!channel>\u200b\u202e@here " * 60_000)[:1_000_000]
    assert len(inert(big, 500)) <= 500
    assert len(label(big)) == LABEL_MAX
    assert visible("a\u2028b\u0085c\x00d") == "a b cd"
