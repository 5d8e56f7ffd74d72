"""Benchmarks: `python -m tests.bench` (see README, Performance)."""
