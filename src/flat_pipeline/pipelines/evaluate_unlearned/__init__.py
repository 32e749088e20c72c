"""evaluate_unlearned pipeline: the unlearned model's part of the evaluate pipeline alone, with the evaluation sets
(e.g. a new unlearned model against the pinned retain reference: kedro run --pipelines unlearn,evaluate_unlearned)."""

from kedro.pipeline import Pipeline

from flat_pipeline.pipelines.evaluate.pipeline import role_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    return role_pipeline("unlearned")
