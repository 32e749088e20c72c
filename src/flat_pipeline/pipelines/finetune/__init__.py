"""finetune: the original model (all training data) and the retain model (without the forget split's items)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
