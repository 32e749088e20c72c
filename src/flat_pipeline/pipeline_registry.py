"""Project pipelines: every package under `pipelines/` by its name (combinations such as `prepare` included)."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

ON_REQUEST = {"evaluate_external", "benchmark"}  # a model path at run time; 12 unlearning runs


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects; `__default__` runs them all but those
        run on request: `evaluate_external` (needs `--params external_model=...`) and `benchmark` (12 methods).
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (pipeline for name, pipeline in pipelines.items() if name not in ON_REQUEST), Pipeline([])
    )
    return pipelines
