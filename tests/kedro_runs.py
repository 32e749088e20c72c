"""Running the project in tests: a fresh copy of it, and `kedro run` through a KedroSession in this process."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the project without data, runs or environments, as the working directory (relative paths in the
    catalog and mlflow.yml resolve against it)."""
    target = tmp_path / "project"
    shutil.copytree(
        PROJECT,
        target,
        ignore=shutil.ignore_patterns(
            ".venv*", ".git", "mlruns", "mlflow.db", "build", "*.log", "__pycache__", ".pytest_cache", ".ruff_cache"
        ),
    )
    for folder in (target / "data").iterdir():
        for child in folder.iterdir():
            if child.name != ".gitkeep":
                shutil.rmtree(child)
    # An absolute tracking URI per copy: mlflow caches its sqlite store by URI string, so the relative
    # `sqlite:///mlflow.db` of every copy would otherwise keep writing to the first copy's database.
    mlflow_yml = target / "conf" / "base" / "mlflow.yml"
    mlflow_yml.write_text(mlflow_yml.read_text().replace("sqlite:///mlflow.db", f"sqlite:///{target}/mlflow.db"))
    monkeypatch.chdir(target)
    bootstrap_project(target)
    return target


def run_session(project, pipelines, runtime_params=None, env="test"):
    import mlflow

    with KedroSession.create(project_path=project, env=env, runtime_params=runtime_params) as session:
        session.run(pipeline_names=pipelines)
    # kedro-mlflow finishes the run, but this thread's mlflow run stack keeps it; a second session in the same
    # process would then reuse it. Each `kedro run` is its own process, so this only concerns in-process tests.
    while mlflow.active_run():
        mlflow.end_run()
