"""Kedro datasets written for this project (the only Kedro-facing code outside `pipelines/`)."""

from .model_dataset import HFModelDataset

__all__ = ["HFModelDataset"]
