"""pueue-watcher: watch pueue queues on many hosts, detect finished phases, check them and alert."""

__version__ = "0.1.0"
