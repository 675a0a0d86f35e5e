"""Benchmarks: each scenario is measured side by side with its baseline in one run (``./dev bench``)."""
