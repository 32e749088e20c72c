"""tune_report pipeline: the tuned leaderboard from `tune.storage`, once the `tune_worker` runs are done."""

from kedro.pipeline import Pipeline

from flat_pipeline.pipelines.tune.pipeline import report_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    return report_pipeline()
