"""Which of a host's groups the watcher keeps: the configured ones, within the per-host limits.

A host decides its own group names and how many there are. A compromised host could otherwise make the
watcher hold, export and store without bound: 20,000 groups become 320,000 series per scrape, and a 1 MB name
becomes a 1 MB label, log line and alert (issue 13, M1). So, per host:

- a group whose name is longer than ``watcher.max_group_name`` characters is not watched at all;
- at most ``watcher.max_groups`` groups are kept. Groups the watcher already tracks come first (a phase in
  progress is never dropped for a newcomer), then the rest by name, so the choice is the same at every poll.

What is left out is counted in :class:`Dropped`, which the daemon reports (a warning when it changes, and in
``pueue_watcher_groups_dropped``), so that an honest host that outgrows the limit is noticed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from watcher.pueue.model import Snapshot


@dataclass(frozen=True, slots=True)
class Dropped:
    """Groups of one snapshot that the watcher left out: over the count, and names over the length."""

    over_count: int = 0
    long_names: int = 0
    #: Tracked groups among them (the limit was lowered): their tracks are kept as they are, not taken for
    #: removed groups.
    tracked: frozenset[str] = frozenset()

    @property
    def total(self) -> int:
        return self.over_count + self.long_names


NONE_DROPPED = Dropped()


def select_groups(
    snapshot: Snapshot,
    globs: Sequence[str],
    *,
    max_groups: int,
    max_name: int,
    keep: Collection[str] = (),
) -> tuple[Snapshot, Dropped]:
    """The snapshot of the groups the watcher keeps (their tasks only), and what it left out. ``globs``: the
    host's ``groups`` (``["*"]`` for every group); ``keep``: the groups already tracked, kept first."""
    every = globs == ["*"]
    names = [n for n in snapshot.groups if every or any(fnmatchcase(n, p) for p in globs)]
    short = [n for n in names if len(n) <= max_name]
    long_names = len(names) - len(short)
    if len(short) > max_groups:
        first = set(keep)
        short.sort(key=lambda n: (n not in first, n))
        del short[max_groups:]
    groups = {n: snapshot.groups[n] for n in short}
    watched = set(names)
    left_out = frozenset(n for n in keep if n in watched and n not in groups)
    dropped = Dropped(len(names) - long_names - len(short), long_names, left_out)
    if len(groups) == len(snapshot.groups):
        return snapshot, dropped
    tasks = tuple(t for t in snapshot.tasks if t.group in groups)
    return Snapshot(groups=groups, tasks=tasks, format=snapshot.format), dropped
