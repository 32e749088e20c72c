"""Project pipelines: every package under `pipelines/` by its name (combinations such as `prepare` included)."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

ON_REQUEST = {"evaluate_external"}


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects; `__default__` runs them all but `evaluate_external`,
        which needs a model path at run time (`--params external_model=...`).
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (pipeline for name, pipeline in pipelines.items() if name not in ON_REQUEST), Pipeline([])
    )
    return pipelines
