"""Phases: a group's tasks from the moment it becomes active until it is complete (tracker.py)."""
