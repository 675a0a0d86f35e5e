"""Sharding: ``n`` watchers split a fleet between them, each host to exactly one of them.

A host goes to the shard with the highest score ``hash(shard, host)`` (rendezvous hashing). The split is the
same on every machine and every run (the hash is BLAKE2b of the names, not Python's salted ``hash``), and
going from ``n`` to ``n + 1`` shards moves only the hosts the new shard wins, about ``1 / (n + 1)`` of them,
instead of reshuffling the fleet. Shards are written ``i/n`` with ``1 <= i <= n``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TypeVar

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")

T = TypeVar("T")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` → ``(2, 3)``; a clear ValueError otherwise."""
    match = _SHARD.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a shard: write i/n, for example 1/3")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= index <= count:
        raise ValueError(f"shard {text!r}: i must be between 1 and n")
    return index, count


def shard_of(host: str, count: int) -> int:
    """The shard (1 … count) that owns ``host``."""
    return max(range(1, count + 1), key=lambda shard: _score(shard, host))


def select(items: Sequence[T], names: Sequence[str], index: int, count: int) -> list[T]:
    """The items whose name belongs to shard ``index`` of ``count``."""
    return [item for item, name in zip(items, names, strict=True) if shard_of(name, count) == index]


def _score(shard: int, host: str) -> int:
    digest = hashlib.blake2b(f"{shard}\0{host}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
