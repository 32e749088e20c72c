"""evaluate_external pipeline: evaluate a model folder or hub id given at run time against the latest retain
reference, e.g. `kedro run --pipelines evaluate_external --params external_model=/models/my-unlearned`."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
