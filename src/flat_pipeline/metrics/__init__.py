"""Metrics: each family in its own module."""
