"""Reading a benchmark back from MLflow (flat_pipeline.benchmark_runs), on a small hand-made store: parent runs with
nested child runs per method, as hooks/method_runs.py logs them."""

import pytest
from mlflow import MlflowClient

from flat_pipeline.benchmark_runs import PARENT_TAG, is_flat, latest_benchmark

EXPERIMENT = "flat_pipeline_test"


def benchmark(client: MlflowClient, experiment_id: str, start: int, methods: dict[str, dict[str, float]]) -> str:
    parent = client.create_run(experiment_id, start_time=start, tags={"kedro_pipelines": "benchmark"}).info.run_id
    for offset, (method, metrics) in enumerate(methods.items(), start=1):
        tags = {PARENT_TAG: parent, "method": method}
        child = client.create_run(experiment_id, start_time=start + offset, tags=tags).info.run_id
        for name, value in metrics.items():
            client.log_metric(child, name, value)
        client.set_terminated(child)
    client.set_terminated(parent)
    return parent


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(tmp_path / "mlruns").as_uri())
    return uri, client, experiment_id


def test_the_latest_benchmark_and_one_row_per_method(store):
    uri, client, experiment_id = store
    benchmark(client, experiment_id, 1_000, {"npo": {"forget_quality": 0.1}})  # an older benchmark
    latest = benchmark(
        client,
        experiment_id,
        2_000,
        {
            "npo": {"forget_quality": 0.02, "model_utility": 0.41},
            "flat-kl": {"forget_quality": 0.3, "model_utility": 0.45},
        },
    )
    client.create_run(experiment_id, start_time=3_000)  # a later run without methods (e.g. `kedro run`)

    parent, methods = latest_benchmark(EXPERIMENT, uri)
    assert parent.info.run_id == latest
    assert methods["method"].tolist() == ["flat-kl", "npo"]
    assert methods["forget_quality"].tolist() == [0.3, 0.02]
    assert methods["model_utility"].tolist() == [0.45, 0.41]
    assert set(methods["status"]) == {"FINISHED"}
    assert is_flat(methods["method"]).tolist() == [True, False]


def test_no_benchmark_yet_is_named(store):
    uri, client, experiment_id = store
    client.log_metric(client.create_run(experiment_id).info.run_id, "npo.forget_quality", 0.1)  # one flat run
    with pytest.raises(LookupError, match="kedro run --pipelines benchmark"):
        latest_benchmark(EXPERIMENT, uri)
    with pytest.raises(LookupError, match="no experiment 'flat_pipeline_other'"):
        latest_benchmark("flat_pipeline_other", uri)
