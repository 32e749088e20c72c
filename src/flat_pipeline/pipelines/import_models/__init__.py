"""import_models pipeline: bring finetuned original and retain models (a folder or a hub id) into the catalog as new
versions of `original_model` and `retain_model`, e.g. open-unlearning's released TOFU models."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
