"""Benchmarks with same-run baselines (issue 7): ``python benchmarks/run.py --quick``."""
