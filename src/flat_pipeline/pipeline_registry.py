"""Project pipelines: every package under `pipelines/` by its name (combinations such as `prepare` included)."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from flat_pipeline.pipelines.evaluate.pipeline import ROLES

# Not in the default run: they need a model or log path at run time, are long (benchmark: 12 unlearning runs; tune:
# dozens per method), or are one model's part of `evaluate` (evaluate_retain, ...).
ON_REQUEST = {
    "evaluate_external",
    "benchmark",
    "benchmark_worker",
    "benchmark_report",
    "tune",
    "tune_worker",
    "tune_report",
    "import_models",
    "import_retain_logs",
    *(f"evaluate_{r}" for r in ROLES),
}


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects; `__default__` runs them all but those
        in ON_REQUEST.
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (pipeline for name, pipeline in pipelines.items() if name not in ON_REQUEST), Pipeline([])
    )
    return pipelines
