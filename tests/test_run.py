"""End-to-end: `kedro run` through a KedroSession on a copy of the project, with the small `test` environment."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.framework.startup import bootstrap_project

from tests.kedro_runs import run_session

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
def test_default_run_saves_every_model_and_logs_training_unlearning_and_evaluation(project):
    run_session(project, ["__default__"])
    for name in MODELS:
        versions = sorted(p for p in project.glob(f"data/test/06_models/{name}/*") if p.is_dir())
        assert len(versions) == 1 and (versions[0] / name / "model.safetensors").is_file()

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["flat_pipeline_test"]).iloc[0]
    client = mlflow.MlflowClient()
    for role in ("original", "retain"):
        history = client.get_metric_history(run.run_id, f"{role}.train_loss")
        assert len(history) >= 2 and history[-1].value < history[0].value
        assert client.get_metric_history(run.run_id, f"{role}.train_exact_match")
    assert run["params.finetune.training.learning_rate"] == "0.003"
    assert run["params.model.source"] == "tiny_llama"
    assert run["params.unlearn.divergence"] == "kl"
    forget_scores = client.get_metric_history(run.run_id, "unlearn.forget_score")
    assert len(forget_scores) == 5  # 40 forget items / batch 8, one epoch
    assert client.get_metric_history(run.run_id, "unlearn.template_score")

    # evaluate: every summary metric under its model's role, the figure as an artifact, versioned reports
    metrics = run.filter(like="metrics.").index
    for role in ("original", "retain", "unlearned"):
        for name in ("forget_quality", "model_utility", "forget_Q_A_ROUGE", "privleak", "mia_min_k"):
            assert f"metrics.{role}.{name}" in metrics, (role, name)
    assert run["metrics.retain.forget_quality"] == 1.0
    assert run["metrics.original.forget_quality"] < 1.0
    artifacts = [a.path for a in client.list_artifacts(run.run_id, "evaluation")]
    assert artifacts == ["evaluation/evaluation_comparison.png"]
    for name in ("original_evaluation_summary.json", "retain_reference.json", "unlearned_evaluation_items.parquet"):
        assert len(list(project.glob(f"data/test/*/{name}/*/{name}"))) == 1, name
    summary = json.loads(next(project.glob("data/test/08_reporting/unlearned_evaluation_summary.json/*/*")).read_text())
    assert summary["retain_reference"]["forget_split"] == "forget10"
    assert "retain_model" in summary["retain_reference"]["retain_model"]

    # a model given by path, against the same pinned retain reference
    unlearned = next(project.glob("data/test/06_models/unlearned_model/*/unlearned_model"))
    run_session(project, ["evaluate_external"], runtime_params={"external_model": str(unlearned)})
    external = json.loads(next(project.glob("data/test/08_reporting/external_evaluation_summary.json/*/*")).read_text())
    assert external["model"] == str(unlearned)
    assert external["metrics"]["forget_quality"] == pytest.approx(summary["metrics"]["forget_quality"])


@pytest.mark.slow
def test_benchmark_writes_a_leaderboard_that_the_notebook_reads(project, monkeypatch):
    import mlflow
    import nbformat
    import pandas as pd
    from nbclient import NotebookClient

    from flat_pipeline.pipelines.benchmark.pipeline import BENCHMARK_METHODS

    run_session(project, ["__default__"])  # the original and retain models and the retain reference
    run_session(project, ["benchmark"])
    table = pd.read_csv(next(project.glob("data/test/08_reporting/leaderboard.csv/*/leaderboard.csv")))
    assert set(table["method"]) == {*BENCHMARK_METHODS, "original", "retain"}
    assert table["forget_quality"].between(0, 1).all()
    markdown = next(project.glob("data/test/08_reporting/leaderboard.md/*/leaderboard.md")).read_text()
    assert "| flat_kl |" in markdown and "| npo |" in markdown
    assert len(list(project.glob("data/test/06_models/benchmark/*/*/*/model.safetensors"))) == len(BENCHMARK_METHODS)

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["flat_pipeline_test"], order_by=["attributes.start_time DESC"]).iloc[0]
    assert {f"metrics.{m}.forget_quality" for m in BENCHMARK_METHODS} <= set(run.index)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.run_id, "leaderboard")}
    expected = ("leaderboard.csv", "leaderboard.md", "leaderboard_scatter.png")
    assert artifacts == {f"leaderboard/{name}" for name in expected}

    monkeypatch.setenv("KEDRO_ENV", "test")
    notebook = nbformat.read(project / "notebooks" / "leaderboard.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(project / "notebooks")}}).execute()
    ansi = re.compile(r"\x1b\[[0-9;]*m")  # Kedro's IPython display colours plain-text results
    results = [
        [ansi.sub("", o["data"]["text/plain"]) for o in cell.get("outputs", []) if o["output_type"] == "execute_result"]
        for cell in notebook.cells
    ]
    assert "flat_kl" in results[1][0] and "retain" in results[1][0]  # the leaderboard table
    assert int(results[-1][0]) >= len(BENCHMARK_METHODS) + 3  # (run, model) points: 3 roles + the methods
