"""The tune pipeline as a cluster runs it (issue 26): one PostgreSQL server holds the Optuna study and, behind one
`mlflow server` with an artifact proxy, the MLflow runs. Two `kedro run --pipelines tune_worker` processes start at once
in two working folders (two machines, the data and models on a shared filesystem), then `tune_report` runs from a
third. Together the workers finish exactly the requested trials, none twice; the report picks each method's best
across both by the stated rule; the server holds every worker's run with its trials nested under it."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from flat_pipeline.tuning import TuneConfig, open_storage, study_name, trial_records

from .kedro_runs import clone_project, run_session
from .services import mlflow_server

pytestmark = pytest.mark.slow

METHODS = ["flat_kl", "npo"]  # conf/test/parameters_tune.yml
N_TRIALS, SEEDS = 3, [1, 2]


@pytest.fixture(scope="module")
def storage(postgres):
    return postgres.database("tune")


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    """`mlflow server` with its backend store in PostgreSQL and artifacts proxied to a folder (S3 in a cluster)."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    with mlflow_server(postgres.database("mlflow"), folder, artifacts_destination=folder / "artifacts") as url:
        yield url, folder / "artifacts"


def _machine(project: Path, target: Path) -> Path:
    """Another machine's working folder: the project's code and configuration, its data folder on the shared
    filesystem (`project`'s), no MLflow store of its own."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = {"data", "mlflow.db", "mlruns"} if Path(folder) == project else set()
        return {name for name in names if name in top or name == "__pycache__"}

    shutil.copytree(project, target, ignore=ignore)
    (target / "data").symlink_to(project / "data", target_is_directory=True)
    return target


@pytest.fixture(scope="module")
def machines(benchmarked_project, storage, tracking_server, tmp_path_factory):
    """Working folders of two worker machines and a report machine, after the workers (started together) and the
    report ran: {"a": ..., "b": ..., "report": ...}."""
    server, _ = tracking_server
    root = tmp_path_factory.mktemp("cluster")
    a = clone_project(benchmarked_project, root / "a" / "project")  # its data folder stands for the shared one
    folders = {"a": a, "b": _machine(a, root / "b" / "project"), "report": _machine(a, root / "report" / "project")}
    kedro = Path(sys.executable).parent / "kedro"
    params = f"tune.storage={storage}"
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": server}
    workers = [
        subprocess.Popen(
            [kedro, "run", "--env", "test", "--pipelines", "tune_worker", "--params", f"tune.worker={index},{params}"],
            cwd=folders[machine],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for index, machine in enumerate(("a", "b"))
    ]
    outputs = [worker.communicate(timeout=900)[0].decode() for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-4000:]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folders["report"])
        run_session(folders["report"], ["tune_report"], {"tune": {"storage": storage}}, tracking_uri=server)
    return folders


@pytest.fixture(scope="module")
def tuned_project(machines):
    """The shared data folder's project (machine a's)."""
    return machines["a"]


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


def test_every_trial_is_a_nested_mlflow_run_on_the_shared_server_under_its_workers_run(machines, tracking_server):
    server, artifacts = tracking_server
    client = mlflow.MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name("flat_pipeline_test")
    trials = client.search_runs([experiment.experiment_id], "tags.tune_phase = 'search'", max_results=1000)
    assert len(trials) == N_TRIALS * len(METHODS)
    parents = {run.data.tags["mlflow.parentRunId"] for run in trials}
    assert len(parents) == 2  # one `kedro run` per worker
    for parent in map(client.get_run, parents):  # the workers' runs, each finished, from both machines
        assert parent.data.tags["kedro_pipelines"] == "tune_worker" and parent.info.status == "FINISHED"
    for run in trials:
        assert {"forget_quality", "model_utility"} <= set(run.data.metrics)
        assert run.data.tags["kedro_env"] == "test" and run.data.tags["benchmark_method"] in METHODS
        assert "unlearn.learning_rate" in run.data.params
        assert run.info.status == "FINISHED"
    # the report, run from a third folder, on the same server; its artifacts went through the server's proxy
    (report,) = client.search_runs([experiment.experiment_id], "tags.kedro_pipelines = 'tune_report'")
    names, folders = [], [None]
    while folders:  # every file of the run, through the server
        for artifact in client.list_artifacts(report.info.run_id, folders.pop()):
            (folders if artifact.is_dir else names).append(artifact.path)
    assert any(Path(name).name.startswith("tuned_leaderboard") for name in names), names
    assert any(path.name.startswith("tuned_leaderboard") for path in artifacts.rglob("*")), "nothing in the store"
    # no machine logged to a store of its own
    assert not (machines["b"] / "mlflow.db").exists() and not (machines["report"] / "mlflow.db").exists()
    local = mlflow.MlflowClient(tracking_uri=f"sqlite:///{machines['a'] / 'mlflow.db'}")
    assert not local.search_runs(
        [e.experiment_id for e in local.search_experiments()], "tags.kedro_pipelines = 'tune_worker'"
    )


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
