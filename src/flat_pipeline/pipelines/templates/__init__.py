"""templates: template answers for every forget prompt (FLAT's Step 1)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
