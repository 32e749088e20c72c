"""The benchmark spread over processes (issue 26): two `kedro run --pipelines benchmark_worker --namespaces ...`
processes at once split the test environment's methods, then `benchmark_report` makes the leaderboard. It equals the
single-process benchmark's, metric for metric, and its MLflow run is the parent of every method's run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from flat_pipeline.pipelines.benchmark.pipeline import BENCHMARK_METHODS

from .kedro_runs import clone_project, run_session

pytestmark = pytest.mark.slow


def _latest(folder: Path) -> Path:
    return max(p for p in folder.iterdir() if p.is_dir()) / folder.name


@pytest.fixture(scope="module")
def split_project(benchmarked_project, tmp_path_factory):
    target = clone_project(benchmarked_project, tmp_path_factory.mktemp("split") / "project")
    kedro = Path(sys.executable).parent / "kedro"
    halves = [BENCHMARK_METHODS[0::2], BENCHMARK_METHODS[1::2]]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [kedro, "run", "--env", "test", "--pipelines", "benchmark_worker", "--namespaces", ",".join(half)],
            cwd=target,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for half in halves
    ]
    outputs = [worker.communicate(timeout=900)[0].decode() for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-4000:]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(target)
        run_session(target, ["benchmark_report"])
    return target


def test_two_processes_give_the_single_process_leaderboard_metric_for_metric(benchmarked_project, split_project):
    board = "data/test/08_reporting/leaderboard.csv"
    single = pd.read_csv(_latest(benchmarked_project / board)).set_index("method").sort_index()
    split = pd.read_csv(_latest(split_project / board)).set_index("method").sort_index()
    assert len(list((split_project / board).iterdir())) == 2  # the single-process one, then the report's
    assert set(split.index) >= set(BENCHMARK_METHODS)
    # every number equal; each method row names its own process's run
    runs = ["mlflow_run_id"]
    pd.testing.assert_frame_equal(split.drop(columns=runs), single.drop(columns=runs), check_exact=True)
    methods = list(BENCHMARK_METHODS)
    assert split.loc[methods, "mlflow_run_id"].notna().all() and single.loc[methods, "mlflow_run_id"].notna().all()
    assert not set(split.loc[methods, "mlflow_run_id"]) & set(single.loc[methods, "mlflow_run_id"])


def test_the_report_run_is_the_parent_of_every_method_run_of_both_processes(split_project):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{split_project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("flat_pipeline_test")
    (report,) = client.search_runs([experiment.experiment_id], "tags.kedro_pipelines = 'benchmark_report'")
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{report.info.run_id}'")
    assert sorted(run.data.tags["benchmark_method"] for run in children) == sorted(BENCHMARK_METHODS)
    runs = client.search_runs([experiment.experiment_id], "tags.kedro_pipelines = 'benchmark_worker'")
    workers = [run for run in runs if "benchmark_method" not in run.data.tags]
    assert len(workers) == 2  # the processes' own runs, whose methods the report adopted
    assert {run.info.run_id for run in runs} - {run.info.run_id for run in workers} == {c.info.run_id for c in children}
    for run in children:
        assert "forget_quality" in run.data.metrics and run.info.status == "FINISHED"
    # the leaderboard names these runs, row by row
    board = pd.read_csv(_latest(split_project / "data/test/08_reporting/leaderboard.csv")).set_index("method")
    assert {board.loc[run.data.tags["benchmark_method"], "mlflow_run_id"] for run in children} == {
        run.info.run_id for run in children
    }
