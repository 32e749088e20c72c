"""What `kedro reproduce` reads from a run and how it compares (flat_pipeline.reproduce), on runs written straight into
an MLflow store: a benchmark method's child run, a tune trial, the code check, the metric table."""

from __future__ import annotations

import json
import math

import mlflow
import pytest

from flat_pipeline.reproduce import ReproduceError, compare, recipe_of, source_problem

VERSION = "2026-12-07T10.00.00.000Z"


@pytest.fixture
def client(tmp_path):
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def _path(dataset: str, version: str = VERSION) -> str:
    return f"/machine/data/test/06_models/{dataset}/{version}/{dataset}"


def test_a_benchmark_child_is_rerun_as_its_namespace_alone_with_the_inputs_of_both_runs(client):
    experiment = client.create_experiment("recipes")
    parent = client.create_run(experiment, tags={
        "kedro_env": "test", "kedro_pipelines": "benchmark", "runtime_params": json.dumps({"unlearn": {"seed": 3}}),
        "kedro_run_filters": "{}", "mlflow.source.git.commit": "abc123",
        "loaded/benchmark_splits": _path("benchmark_splits"),
    }).info.run_id  # fmt: skip
    child = client.create_run(experiment, tags={
        "mlflow.parentRunId": parent, "benchmark_method": "npo", "kedro_env": "test",
        "loaded/original_model": _path("original_model"),
        "loaded/npo.unlearned_model": _path("npo.unlearned_model"),  # its own output, read back by its evaluation
        "saved/npo.unlearned_model": _path("npo.unlearned_model"),
    }).info.run_id  # fmt: skip
    for step, value in enumerate([3.0, 2.0]):
        client.log_metric(child, "train/unlearn/loss", value, step=step)
    client.log_metric(child, "forget_quality", 0.25)

    recipe = recipe_of(child, client)
    assert recipe.pipelines == ["benchmark_worker"] and recipe.filters == {"namespaces": ["npo"]}
    assert recipe.child_tags == {"benchmark_method": "npo"}
    assert recipe.env == "test" and recipe.runtime_params == {"unlearn": {"seed": 3}} and recipe.commit == "abc123"
    assert recipe.load_versions == {"benchmark_splits": VERSION, "original_model": VERSION}
    assert recipe.metrics == {"forget_quality": [0.25], "train/unlearn/loss": [3.0, 2.0]}


def test_a_tune_trial_is_rerun_alone_by_its_worker_with_tune_replay(client):
    experiment = client.create_experiment("recipes")
    worker = client.create_run(experiment, tags={
        "kedro_env": "test", "kedro_pipelines": "tune_worker", "mlflow.source.git.commit": "abc123",
        "runtime_params": json.dumps({"tune": {"storage": "sqlite:///t.db", "worker": 1}}),
        "loaded/original_model": _path("original_model"),
    }).info.run_id  # fmt: skip
    trial = client.create_run(experiment, tags={
        "mlflow.parentRunId": worker, "benchmark_method": "npo", "tune_phase": "search", "tune_trial": "2",
        "tune_study": "tune.npo", "kedro_env": "test",
    }).info.run_id  # fmt: skip
    recipe = recipe_of(trial, client)
    assert recipe.pipelines == ["tune_worker"] and recipe.filters == {}
    replay = {"method": "npo", "phase": "search", "trial": 2}
    assert recipe.runtime_params == {"tune": {"storage": "sqlite:///t.db", "worker": 1, "replay": replay}}
    assert recipe.child_tags == {"benchmark_method": "npo", "tune_phase": "search", "tune_trial": "2"}
    assert recipe.load_versions == {"original_model": VERSION}


def test_a_run_of_another_tool_or_an_unknown_id_is_refused_with_the_reason(client):
    experiment = client.create_experiment("recipes")
    other = client.create_run(experiment).info.run_id
    with pytest.raises(ReproduceError, match="was not made by `kedro run` of this project"):
        recipe_of(other, client)
    with pytest.raises(ReproduceError, match="no MLflow run 0123"):
        recipe_of("0123", client)


def test_the_code_check_names_both_commits_and_tells_uncommitted_changes_apart(client):
    experiment = client.create_experiment("recipes")
    run = client.create_run(experiment, tags={"kedro_env": "test", "mlflow.source.git.commit": "abc-dirty",
                                              "source.diff_sha256": "d1"}).info.run_id  # fmt: skip
    recipe = recipe_of(run, client)
    assert source_problem(recipe, "abc-dirty", "d1") is None
    assert "not the same ones (diff sha256 d1 against d2)" in source_problem(recipe, "abc-dirty", "d2")
    assert source_problem(recipe, "def", None) == "the run was made at commit abc-dirty, this checkout is at def"


def test_every_metric_is_compared_over_its_whole_history_and_timings_are_left_out():
    original = {"loss": [3.0, 2.0], "forget_quality": [0.5], "nan_metric": [math.nan], "train/original/seconds": [9.0]}
    same = compare(original, {"loss": [3.0, 2.0], "forget_quality": [0.5], "nan_metric": [math.nan]})
    assert same.identical and same.largest == 0.0 and same.timings == ["train/original/seconds"]
    assert "every metric identical" in same.markdown("a", "b")
    moved = compare(original, {"loss": [3.0, 2.25], "forget_quality": [0.5]})
    assert not moved.identical and moved.largest == 0.25 and moved.missing == ["nan_metric"]
    assert "largest difference 0.25, 1 metrics missing" in moved.markdown("a", "b")
    assert compare({"loss": [1.0, 2.0]}, {"loss": [1.0]}).largest == math.inf  # a step more or less
