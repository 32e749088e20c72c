"""evaluate_unlearned pipeline: the unlearned model's part of the evaluate pipeline alone, with the evaluation sets
(e.g. imported models evaluated before any unlearning: kedro run --pipelines evaluate_retain,evaluate_original)."""

from kedro.pipeline import Pipeline

from flat_pipeline.pipelines.evaluate.pipeline import role_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    return role_pipeline("unlearned")
