"""evaluate_base pipeline: the base model's part of the evaluate pipeline alone, with the evaluation sets (the model
every finetune started from: what a model that never saw the benchmark's authors scores)."""

from kedro.pipeline import Pipeline

from flat_pipeline.pipelines.evaluate.pipeline import role_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    return role_pipeline("base")
