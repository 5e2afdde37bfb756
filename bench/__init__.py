"""Benchmarks of the data path, each against a reference measured in the same run."""
