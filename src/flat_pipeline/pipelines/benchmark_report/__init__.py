"""benchmark_report pipeline: the leaderboard from every method's latest evaluation summary, once the
`benchmark_worker` runs are done; its MLflow run becomes the parent of the method runs behind it."""

from kedro.pipeline import Pipeline

from flat_pipeline.pipelines.benchmark.pipeline import report_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    return report_pipeline()
