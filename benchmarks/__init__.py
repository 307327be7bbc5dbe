"""Benchmark scripts (run as files: `python benchmarks/<name>.py`); each prints JSON.

Results: docs/benchmarks.md.
"""
