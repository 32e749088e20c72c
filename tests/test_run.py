"""End-to-end: `kedro run` through a KedroSession on a copy of the project, with the small `test` environment."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.framework.startup import bootstrap_project

from tests.kedro_runs import clone_project, run_session

PROJECT = Path(__file__).resolve().parents[1]
VERSIONED = ["benchmark_splits", "forget_set", "retain_set", "holdout_set", "forget_templates"]
MODELS = ["original_model", "retain_model", "unlearned_model"]


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(file.relative_to(folder).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def dataset_versions(project: Path) -> dict[str, list[Path]]:
    return {name: sorted(p for p in project.glob(f"data/test/*/{name}/*") if p.is_dir()) for name in VERSIONED}


@pytest.mark.slow
def test_second_run_writes_new_versions_and_leaves_the_first_untouched(project):
    run_session(project, ["data_prep", "templates"])
    first = dataset_versions(project)
    assert all(len(versions) == 1 for versions in first.values()), first
    digests = {name: tree_digest(versions[0]) for name, versions in first.items()}

    run_session(project, ["data_prep", "templates"])
    second = dataset_versions(project)
    assert all(len(versions) == 2 for versions in second.values()), second
    assert {name: tree_digest(versions[0]) for name, versions in second.items()} == digests
    # Same seed, same data: the new version's content equals the old one's.
    assert tree_digest(second["forget_set"][1] / "forget_set") == tree_digest(first["forget_set"][0] / "forget_set")

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["flat_pipeline_test"])
    assert len(runs) == 2
    assert set(runs["params.data_prep.synthetic.n_authors"]) == {"20"}
    assert set(runs["params.templates.source"]) == {"idk"}


@pytest.mark.slow
def test_kedro_viz_builds_the_lineage_site(project):
    kedro = Path(sys.executable).with_name("kedro")
    result = subprocess.run(
        [str(kedro), "viz", "build"], cwd=project, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    main = (project / "build" / "api" / "main").read_text()
    for node in (
        "load_benchmark_node",
        "build_forget_templates_node",
        "original.finetune_model_node",
        "unlearned.evaluate_model_node",
    ):
        assert node in main


def saved_time(project: Path, name: str) -> float:
    """When the latest version of model `name` was written (seconds since the epoch)."""
    return max(p.stat().st_mtime for p in project.glob(f"data/test/06_models/{name}/*/{name}/model.safetensors"))


def test_registry_has_every_pipeline_and_the_default_runs_them_all():
    from flat_pipeline.pipeline_registry import register_pipelines

    bootstrap_project(PROJECT)
    pipelines = register_pipelines()
    assert {"data_prep", "templates", "finetune", "unlearn", "evaluate", "prepare", "__default__"} <= set(pipelines)
    default_nodes = {n.name for n in pipelines["__default__"].nodes}
    assert {n.name for n in pipelines["prepare"].nodes} <= default_nodes
    assert {n.name for n in pipelines["evaluate"].nodes} <= default_nodes
    assert "external.evaluate_model_node" not in default_nodes  # needs --params external_model=...


@pytest.mark.slow
def test_default_run_saves_every_model_and_logs_training_unlearning_and_evaluation(default_run_project):
    project = default_run_project
    for name in MODELS:
        versions = sorted(p for p in project.glob(f"data/test/06_models/{name}/*") if p.is_dir())
        assert len(versions) == 1 and (versions[0] / name / "model.safetensors").is_file()

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["flat_pipeline_test"]).iloc[0]
    client = mlflow.MlflowClient()
    # training curves under train/<job>/, apart from the evaluation metrics, streamed while training ran (their
    # timestamps lie before the end of the node that trained)
    for role in ("original", "retain"):
        history = client.get_metric_history(run.run_id, f"train/{role}/loss")
        assert len(history) >= 2 and history[-1].value < history[0].value
        assert client.get_metric_history(run.run_id, f"train/{role}/exact_match")
    assert run["params.finetune.training.learning_rate"] == "0.005"
    assert run["params.model.source"] == "tiny_llama"
    assert run["params.unlearn.divergence"] == "kl"
    forget_scores = client.get_metric_history(run.run_id, "train/unlearn/forget_score")
    assert len(forget_scores) == 5  # 40 forget items / batch 8, one epoch
    assert client.get_metric_history(run.run_id, "train/unlearn/template_score")
    assert not [key for key in client.get_run(run.run_id).data.metrics if key.startswith("unlearn.")]
    saved = json.loads(next(project.glob("data/test/07_model_output/unlearn_training_history.json/*/*")).read_text())
    assert forget_scores[0].timestamp < saved_time(project, "unlearned_model") * 1000

    # what ran, where, with what: name and tags; the catalog versions it loaded and saved; the model, registrable
    tags = client.get_run(run.run_id).data.tags
    assert tags["mlflow.runName"] == "__default__ flat-kl @test"
    assert tags["kedro_pipelines"] == "__default__" and tags["method"] == "flat-kl"
    assert tags["benchmark_source"] == "synthetic" and tags["forget_split"] == "forget10"
    assert tags["model"] == "tiny_llama" and tags["seed"] == "0" and tags["kedro_env"] == "test"
    assert tags["runtime_params"] == "{}" and "command" in tags
    unlearned = next(project.glob("data/test/06_models/unlearned_model/*/unlearned_model"))
    assert tags["saved/unlearned_model"] == str(unlearned)
    assert tags["loaded/original_model"] == tags["saved/original_model"]
    assert client.list_artifacts(run.run_id, "unlearned_model")
    assert {"forget_score", "unlearn_loss"} <= set(saved)

    # evaluate: every summary metric under its model's role, the figure as an artifact, versioned reports
    metrics = run.filter(like="metrics.").index
    for role in ("original", "retain", "unlearned"):
        for name in ("forget_quality", "model_utility", "forget_Q_A_ROUGE", "privleak", "mia_min_k"):
            assert f"metrics.{role}.{name}" in metrics, (role, name)
    assert run["metrics.retain.forget_quality"] == 1.0
    # the test world is memorised (conf/test/parameters_finetune.yml): the original model answers its forget
    # questions, the retain model, which never saw them, does not; so the metrics checked here are not degenerate
    assert run["metrics.original.forget_Q_A_EM"] > 0.8 and run["metrics.retain.forget_Q_A_EM"] < 0.2
    assert run["metrics.original.model_utility"] > 0.3 and run["metrics.original.mia_min_k"] > 0.9
    assert run["metrics.original.forget_quality"] < 1.0
    artifacts = [a.path for a in client.list_artifacts(run.run_id, "evaluation")]
    assert artifacts == ["evaluation/evaluation_comparison.png"]
    for name in ("original_evaluation_summary.json", "retain_reference.json", "unlearned_evaluation_items.parquet"):
        assert len(list(project.glob(f"data/test/*/{name}/*/{name}"))) == 1, name
    summary = json.loads(next(project.glob("data/test/08_reporting/unlearned_evaluation_summary.json/*/*")).read_text())
    assert summary["retain_reference"]["forget_split"] == "forget10"
    assert "retain_model" in summary["retain_reference"]["retain_model"]


@pytest.mark.slow
def test_the_unlearned_model_registers_and_evaluates_by_path(default_run_project, tmp_path, monkeypatch):
    import mlflow

    project = clone_project(default_run_project, tmp_path / "project")
    monkeypatch.chdir(project)
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["flat_pipeline_test"]).iloc[0]
    model_version = mlflow.register_model(f"runs:/{run.run_id}/unlearned_model", "flat-tiny")
    assert int(model_version.version) == 1
    assert run["artifact_uri"].startswith(str(project))  # the clone logs into its own store, not the original's

    # a model given by path, against the same pinned retain reference
    summary = json.loads(next(project.glob("data/test/08_reporting/unlearned_evaluation_summary.json/*/*")).read_text())
    unlearned = next(project.glob("data/test/06_models/unlearned_model/*/unlearned_model"))
    run_session(project, ["evaluate_external"], runtime_params={"external_model": str(unlearned)})
    external = json.loads(next(project.glob("data/test/08_reporting/external_evaluation_summary.json/*/*")).read_text())
    assert external["model"] == str(unlearned)
    assert external["metrics"]["forget_quality"] == pytest.approx(summary["metrics"]["forget_quality"])


@pytest.mark.slow
def test_benchmark_writes_a_leaderboard(benchmarked_project):
    import mlflow
    import pandas as pd

    from flat_pipeline.pipelines.benchmark.pipeline import BENCHMARK_METHODS

    project = benchmarked_project
    table = pd.read_csv(next(project.glob("data/test/08_reporting/leaderboard.csv/*/leaderboard.csv")))
    assert set(table["method"]) == {*BENCHMARK_METHODS, "original", "retain"}
    assert table["forget_quality"].between(0, 1).all()
    markdown = next(project.glob("data/test/08_reporting/leaderboard.md/*/leaderboard.md")).read_text()
    assert "| flat_kl |" in markdown and "| npo |" in markdown
    assert len(list(project.glob("data/test/06_models/benchmark/*/*/*/model.safetensors"))) == len(BENCHMARK_METHODS)

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    # the parent run keeps the leaderboard; each method's numbers are in its child run (tests/test_mlflow_runs.py)
    runs = mlflow.search_runs(
        experiment_names=["flat_pipeline_test"], filter_string="tags.kedro_pipelines = 'benchmark'"
    )
    run = runs[runs["tags.mlflow.parentRunId"].isna()].iloc[0]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.run_id, "leaderboard")}
    expected = ("leaderboard.csv", "leaderboard.md", "leaderboard_scatter.png")
    assert artifacts == {f"leaderboard/{name}" for name in expected}
