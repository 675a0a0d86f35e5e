"""``python -m watcher`` is the same as ``pueue-watcher``."""

from watcher.cli import entry

entry()
