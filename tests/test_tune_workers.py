"""The tune pipeline as a cluster runs it: two `kedro run --pipelines tune_worker` processes at once on one Optuna
storage, a real PostgreSQL server (issue 26), then `tune_report`. Together they finish exactly the requested trials,
none twice, and the report picks each method's best across both workers by the stated rule."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from flat_pipeline.tuning import TuneConfig, open_storage, study_name, trial_records

from .kedro_runs import clone_project, run_session

pytestmark = pytest.mark.slow

METHODS = ["flat_kl", "npo"]  # conf/test/parameters_tune.yml
N_TRIALS, SEEDS = 3, [1, 2]


@pytest.fixture(scope="module")
def storage(postgres):
    return postgres.database("tune")


@pytest.fixture(scope="module")
def tuned_project(benchmarked_project, storage, tmp_path_factory):
    """A copy of the benchmarked project (models, evaluations, MLflow store), tuned by two worker processes started
    together on one PostgreSQL database, then reported."""
    target = clone_project(benchmarked_project, tmp_path_factory.mktemp("tuned") / "project")
    kedro = Path(sys.executable).parent / "kedro"
    params = f"tune.storage={storage}"
    workers = [
        subprocess.Popen(
            [kedro, "run", "--env", "test", "--pipelines", "tune_worker", "--params", f"tune.worker={index},{params}"],
            cwd=target,
            env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for index in (0, 1)
    ]
    outputs = [worker.communicate(timeout=900)[0].decode() for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-4000:]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(target)
        run_session(target, ["tune_report"], runtime_params={"tune": {"storage": storage}})
    return target


def _config(storage: str) -> TuneConfig:
    return TuneConfig.from_params({"storage": storage, "n_trials": N_TRIALS, "seeds": SEEDS})


def _latest(folder: Path) -> Path:
    return max(p for p in folder.iterdir() if p.is_dir()) / folder.name


def test_two_workers_finish_exactly_the_budget_none_twice(tuned_project, storage):
    assert not (tuned_project / "data/test/06_models/tune").exists()  # nothing in the default SQLite file
    config = _config(storage)
    storage = open_storage(config.storage)
    summaries = [
        json.loads((version / "tune_worker_summary.json").read_text())
        for version in (tuned_project / "data/test/08_reporting/tune_worker_summary.json").iterdir()
    ]
    assert len(summaries) == 2 and summaries[0]["worker"] != summaries[1]["worker"]
    ran = [(t["method"], t["phase"], t["number"]) for s in summaries for t in s["trials"]]
    assert len(ran) == len(set(ran))  # no trial run by both workers
    expected = {(m, "search", n) for m in METHODS for n in range(N_TRIALS)}
    expected |= {(m, "seed", n) for m in METHODS for n in range(len(SEEDS))}
    assert set(ran) == expected  # together: every trial of the budget, nothing beyond it
    assert all(len(s["trials"]) > 0 for s in summaries)  # both workers took a share
    for method in METHODS:
        search = trial_records(storage, study_name(config, method, "search"), 10**6)
        assert [t["number"] for t in search if t["state"] == "COMPLETE"] == list(range(N_TRIALS))
        assert all(t["state"] == "PRUNED" for t in search if t["number"] >= N_TRIALS)  # a surplus ask, never run
        seeds = trial_records(storage, study_name(config, method, "seed"), 10**6)
        assert sorted(t["drawn"]["seed"] for t in seeds if t["state"] == "COMPLETE") == SEEDS


def test_the_report_picks_the_best_trial_across_both_workers_by_the_rule(tuned_project, storage):
    config = _config(storage)
    storage = open_storage(config.storage)
    original = json.loads(
        _latest(tuned_project / "data/test/08_reporting/original_evaluation_summary.json").read_text()
    )["metrics"]
    floor = 0.9 * original["model_utility"]
    board = pd.read_csv(_latest(tuned_project / "data/test/08_reporting/tuned_leaderboard.csv"))
    markdown = _latest(tuned_project / "data/test/08_reporting/tuned_leaderboard.md").read_text()
    assert "maximise forget_quality subject to model_utility >= 0.9 x the original model's" in markdown
    workers = set()
    for method in METHODS:
        search = trial_records(storage, study_name(config, method, "search"), N_TRIALS)
        workers |= {t["worker"] for t in search}
        # the rule written out by hand: above the floor, the highest forget_quality, ties to model_utility
        above = [t for t in search if t["metrics"]["model_utility"] >= floor]
        pool = above or [max(search, key=lambda t: t["metrics"]["model_utility"])]
        best = max(pool, key=lambda t: (t["metrics"]["forget_quality"], t["metrics"]["model_utility"]))
        row = board[board["method"] == method].iloc[0]
        assert row["setting"] == ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["drawn"].items()
        )
        # the cells are the seeds' mean and spread, not the picked trial's own number
        seeds = [t["metrics"] for t in trial_records(storage, study_name(config, method, "seed"), len(SEEDS))]
        # forget_quality, a p-value spanning decades, is averaged on its log10: the cell is the seeds' geometric mean
        logs = [math.log10(s["forget_quality"]) for s in seeds]
        assert row["seeds"] == len(SEEDS)
        assert math.isclose(row["log10_forget_quality"], sum(logs) / len(logs))
        assert math.isclose(row["log10_forget_quality_std"], pd.Series(logs).std())
        assert math.isclose(row["forget_quality"], 10 ** (sum(logs) / len(logs)))
    assert len(workers) == 2  # the searches hold both workers' trials


def test_every_trial_is_a_nested_mlflow_run_with_the_single_run_metric_keys(tuned_project):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tuned_project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("flat_pipeline_test")
    trials = client.search_runs([experiment.experiment_id], "tags.tune_phase = 'search'", max_results=1000)
    assert len(trials) == N_TRIALS * len(METHODS)
    parents = {run.data.tags["mlflow.parentRunId"] for run in trials}
    assert len(parents) == 2  # one `kedro run` per worker
    for run in trials:
        assert {"forget_quality", "model_utility"} <= set(run.data.metrics)
        assert run.data.tags["kedro_env"] == "test" and run.data.tags["benchmark_method"] in METHODS
        assert "unlearn.learning_rate" in run.data.params


def test_every_method_was_searched_under_the_same_rule_budget_and_shared_ranges(tuned_project, storage):
    import optuna

    storage = open_storage(storage)
    settings = [
        json.loads(optuna.load_study(study_name=f"tune.{method}", storage=storage).user_attrs["settings"])
        for method in METHODS
    ]
    for key in ("rule", "n_trials", "seeds", "metrics"):
        assert settings[0][key] == settings[1][key], key
    shared = ("learning_rate", "num_train_epochs")
    assert [{k: s["space"][k] for k in shared} for s in settings][0] == {k: settings[1]["space"][k] for k in shared}
    assert settings[0]["rule"]["floor_fraction"] == 0.9 and settings[0]["n_trials"] == N_TRIALS
