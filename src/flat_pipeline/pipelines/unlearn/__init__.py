"""unlearn: FLAT on the forget split, from the original model, with forget data and template answers only."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
