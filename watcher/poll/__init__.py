"""Polling: the per-host poller, and which groups it keeps. What it runs on a host is in watcher/remote/."""
