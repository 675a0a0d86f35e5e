"""Why a watcher would watch no host at all: none configured, or none in its shard.

A daemon without hosts runs fine and does nothing, which looks like a healthy, quiet fleet. ``run`` and
``once`` log this reason as a warning (``no_hosts``); ``config validate`` can print the same line.
"""

from __future__ import annotations

from watcher.config import Settings, watched_hosts


def no_hosts(settings: Settings, shard: str | None = None) -> str | None:
    """The reason this configuration (with ``shard`` from the command line, which overrides
    ``watcher.shard``) leaves the watcher nothing to watch, or None when it has hosts. A bad shard is the
    caller's to report (ValueError, as from ``watched_hosts``)."""
    if not settings.hosts:
        return "no hosts configured: add a [[hosts]] table to the configuration"
    chosen = shard or settings.watcher.shard
    if chosen is not None and not watched_hosts(settings, shard):
        count = len(settings.hosts)
        hosts = "the one configured host is not" if count == 1 else f"none of the {count} configured hosts is"
        return f"{hosts} in shard {chosen}: this watcher has nothing to watch"
    return None
