"""evaluate pipeline: TOFU, completion and MUSE metrics and membership inference for the original, retain and
unlearned models, with the retain model's numbers as the pinned reference."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
