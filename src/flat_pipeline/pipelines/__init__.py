"""Kedro pipelines: thin wiring of the library's functions."""
