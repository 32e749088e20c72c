"""benchmark_worker pipeline: the benchmark's methods without the leaderboard, each namespace whole, so that
`kedro run --pipelines benchmark_worker --namespaces flat_kl,npo` runs a share of them (one process, GPU or machine
each); `benchmark_report` then makes the leaderboard once."""

from kedro.pipeline import Pipeline

from flat_pipeline.pipelines.benchmark.pipeline import worker_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    return worker_pipeline()
