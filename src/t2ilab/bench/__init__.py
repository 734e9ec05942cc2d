"""Benchmark building blocks (scripts/benchmark.py)."""
