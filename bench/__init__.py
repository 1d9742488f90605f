"""Benchmarks (`make bench`): figures, never timed assertions. Run all with `python -m bench`."""
