"""Benchmark data: the synthetic world, readers for the real formats, validation."""
