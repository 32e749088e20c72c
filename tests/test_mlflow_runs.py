"""The benchmark in MLflow as a user sees it: a real `mlflow server` on loopback over the project's tracking store,
read through its REST API. One parent run per benchmark, one nested child per method with the same metric keys, its
own parameters and tags, so that MLflow's compare and chart views put FLAT and every baseline in one chart."""

from __future__ import annotations

import pytest
import requests

from flat_pipeline.pipelines.benchmark.pipeline import BENCHMARK_METHODS

from .services import mlflow_server as start_mlflow_server


@pytest.fixture(scope="module")
def mlflow_server(benchmarked_project):
    """`mlflow server` over the benchmarked project's store, as `make mlflow-ui` starts it; its base URL."""
    with start_mlflow_server(f"sqlite:///{benchmarked_project / 'mlflow.db'}", benchmarked_project) as url:
        yield url


def _api(url: str, endpoint: str, payload: dict) -> dict:
    response = requests.post(f"{url}/api/2.0/mlflow/{endpoint}", json=payload, timeout=30)
    response.raise_for_status()
    return response.json()


def _search(url: str, experiment_id: str, filter_string: str) -> list[dict]:
    payload = {"experiment_ids": [experiment_id], "filter": filter_string, "max_results": 1000}
    return _api(url, "runs/search", payload).get("runs", [])


def _tags(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}


@pytest.mark.slow
def test_the_benchmark_is_one_parent_with_one_child_per_method(mlflow_server):
    experiment = requests.get(
        f"{mlflow_server}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "flat_pipeline_test"}
    ).json()["experiment"]["experiment_id"]
    benchmark_runs = _search(mlflow_server, experiment, "tags.kedro_pipelines = 'benchmark'")
    (parent,) = [run for run in benchmark_runs if "mlflow.parentRunId" not in _tags(run)]
    parent_id = parent["info"]["run_id"]
    assert _tags(parent)["mlflow.runName"] == "benchmark @test"
    # the leaderboard stays with the parent; the methods' metrics do not (no `flat_kl.forget_quality` any more)
    parent_metrics = {m["key"] for m in parent["data"].get("metrics", [])}
    assert not [key for key in parent_metrics if key.split(".")[0] in BENCHMARK_METHODS]

    children = _search(mlflow_server, experiment, f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(_tags(child)["benchmark_method"] for child in children) == sorted(BENCHMARK_METHODS)
    keys = None
    for child in children:
        tags = _tags(child)
        metrics = {m["key"]: m["value"] for m in child["data"]["metrics"]}
        params = {p["key"]: p["value"] for p in child["data"]["params"]}
        assert {"forget_quality", "model_utility", "forget_Q_A_ROUGE"} <= set(metrics), tags["benchmark_method"]
        evaluation = {key for key in metrics if not key.startswith("train/")}
        assert keys is None or evaluation == keys  # the same keys in every child: one chart per metric
        keys = evaluation
        assert "train/unlearn/loss" in metrics  # the training curve, in the method's own run
        assert child["info"]["status"] == "FINISHED"
        assert tags["kedro_env"] == "test" and tags["forget_split"] == "forget10" and tags["model"] == "tiny_llama"
        assert tags["mlflow.runName"] == f"{tags['benchmark_method']} @test"
        method = params["unlearn.method"]
        assert tags["method"] == (f"flat-{params['unlearn.divergence']}" if method == "flat" else method)
        assert {"unlearn.learning_rate", "unlearn.num_train_epochs", "unlearn.seed"} <= set(params)
        saved_models = [key for key in tags if key.startswith("saved/") and key.endswith("unlearned_model")]
        assert len(saved_models) == 1  # the run leads to its model folder

    by_method = {_tags(child)["benchmark_method"]: child for child in children}
    npo = {p["key"]: p["value"] for p in by_method["npo"]["data"]["params"]}
    assert npo["unlearn.method"] == "npo" and "unlearn.beta" in npo  # the method's own settings, merged
    history = requests.get(
        f"{mlflow_server}/api/2.0/mlflow/metrics/get-history",
        params={"run_id": by_method["flat_kl"]["info"]["run_id"], "metric_key": "train/unlearn/forget_score"},
    ).json()["metrics"]
    assert len(history) >= 2  # a curve, step by step
    # benchmark.trajectory: each method's forget_quality after its one epoch (5 steps of 8 of the 40 forget items),
    # beside the training curve
    for method in ("flat_kl", "npo"):
        trajectory = requests.get(
            f"{mlflow_server}/api/2.0/mlflow/metrics/get-history",
            params={"run_id": by_method[method]["info"]["run_id"], "metric_key": "trajectory/forget_quality"},
        ).json()["metrics"]
        assert [point["step"] for point in trajectory] == [5], method
        assert all(0 <= point["value"] <= 1 for point in trajectory)
