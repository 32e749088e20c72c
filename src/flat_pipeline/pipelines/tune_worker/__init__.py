"""tune_worker pipeline: one worker's share of the tune study, without the report (start it on every process, GPU or
machine that shares `tune.storage`; `tune_report` then assembles the leaderboard once)."""

from kedro.pipeline import Pipeline

from flat_pipeline.pipelines.tune.pipeline import worker_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    return worker_pipeline()
