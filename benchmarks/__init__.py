"""Benchmarks with same-run baselines (README, "Benchmarks"): ``python benchmarks/run.py --quick``."""
