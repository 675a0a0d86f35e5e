"""Polling: the remote one-round-trip command and the per-host poller."""
