"""data_prep: read and validate the benchmark, then pick its forget, retain and holdout splits."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
