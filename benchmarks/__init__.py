"""Benchmark and analysis scripts (run from the repository root as ``python benchmarks/NAME.py``)."""
