"""Running the project in tests: a fresh copy of it, and `kedro run` through a KedroSession in this process."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

PROJECT = Path(__file__).resolve().parents[1]


@functools.cache
def _empty_mlflow_store() -> Path:
    """An MLflow SQLite store with no runs, its tables made by MLflow itself, once per test process: a store's first
    use runs MLflow's schema migrations, 2 to 5 s, which every copy of the project would otherwise pay again."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = Path(tempfile.mkdtemp(prefix="empty_mlflow_store_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "mlruns")).engine.dispose()
    return folder / "mlflow.db"


def copy_project(target: Path, *, made_store: bool = True) -> Path:
    """A copy of the project at `target` without data or runs, bootstrapped, with its own MLflow store: an empty one
    whose tables are made (`made_store`), or none, for the first run to make as a user's first `kedro run` does."""
    tooling = shutil.ignore_patterns(
        ".venv*", ".git", "mlruns", "mlflow.db", "build", "*.log", "__pycache__", ".pytest_cache", ".ruff_cache"
    )
    data = PROJECT / "data"

    def ignore(folder: str, names: list[str]) -> set[str]:
        if Path(folder) == data:  # the data folders, without the runs' artifacts (gigabytes of models)
            return {name for name in names if not (data / name / ".gitkeep").is_file()}
        if Path(folder).parent == data:
            return {name for name in names if name != ".gitkeep"}
        return set(tooling(folder, names))

    shutil.copytree(PROJECT, target, ignore=ignore)
    # An absolute tracking URI per copy: mlflow caches its sqlite store by URI string, so the relative
    # `sqlite:///mlflow.db` of every copy would otherwise keep writing to the first copy's database.
    mlflow_yml = target / "conf" / "base" / "mlflow.yml"
    mlflow_yml.write_text(mlflow_yml.read_text().replace("sqlite:///mlflow.db", f"sqlite:///{target}/mlflow.db"))
    if made_store:
        template = _empty_mlflow_store()
        shutil.copyfile(template, target / "mlflow.db")
        _move_artifact_paths(target / "mlflow.db", str(template.parent), str(target))
    bootstrap_project(target)
    return target


def _move_artifact_paths(store: Path, source: str, target: str) -> None:
    """Point a copied SQLite store's artifact locations (experiments, runs, logged models) from `source` to
    `target`, so that nothing logged through the copy lands in the original's folders."""
    with sqlite3.connect(store) as db:
        for table, column in (
            ("experiments", "artifact_location"),
            ("runs", "artifact_uri"),
            ("logged_models", "artifact_location"),
        ):
            db.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (source, target))
    db.close()


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the project without data, runs or environments, as the working directory (relative paths in the
    catalog and mlflow.yml resolve against it)."""
    target = copy_project(tmp_path / "project")
    monkeypatch.chdir(target)
    return target


def clone_project(source: Path, target: Path) -> Path:
    """A copy of a project that has run, with its data and MLflow store, whose runs and artifacts are its own: the
    tracking URI and the store's artifact paths are moved to `target`, so nothing logged there reaches `source`."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    mlflow_yml = target / "conf" / "base" / "mlflow.yml"
    mlflow_yml.write_text(mlflow_yml.read_text().replace(str(source), str(target)))
    _move_artifact_paths(target / "mlflow.db", str(source), str(target))
    bootstrap_project(target)
    return target


@pytest.fixture(scope="session")
def default_run_project(tmp_path_factory):
    """A copy of the project after `kedro run` in the test environment (the original, retain and unlearned models,
    their evaluations, one MLflow run), made once. Tests only read it; one that runs more works on a `clone_project`."""
    # no MLflow store yet: the run makes it, as a user's first `kedro run` does
    target = copy_project(tmp_path_factory.mktemp("default_run") / "project", made_store=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(target)
        run_session(target, ["__default__"])
    return target


@pytest.fixture(scope="session")
def benchmarked_project(default_run_project, tmp_path_factory):
    """A clone of `default_run_project` after `kedro run --pipelines benchmark` (it reuses that run's original and
    retain models and retain reference), made once for every test that reads a benchmark's outputs (catalog, MLflow
    runs, the notebook). Tests must not run further pipelines in it."""
    target = clone_project(default_run_project, tmp_path_factory.mktemp("benchmarked") / "project")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(target)
        run_session(target, ["benchmark"])
    return target


def run_session(
    project, pipelines, runtime_params=None, env="test", load_versions=None, *, tracking_uri=None, to_outputs=None
):
    """`kedro run` in this process (`to_outputs`: `--to-outputs`, the nodes that make these datasets and nothing else).
    MLflow tracks to the project's own store, or to `tracking_uri` (a server):
    mlflow.yml follows MLFLOW_TRACKING_URI, which every `mlflow.set_tracking_uri` in this process also sets (the
    previous session's store, another project's)."""
    import mlflow

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if tracking_uri is not None:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    try:
        with KedroSession.create(project_path=project, env=env, runtime_params=runtime_params) as session:
            session.run(pipeline_names=pipelines, load_versions=load_versions, to_outputs=to_outputs)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        # kedro-mlflow finishes the run, but this thread's mlflow run stack keeps it; a second session in the same
        # process would then reuse it (its tracking URI too). Each `kedro run` is its own process, so this only
        # concerns in-process tests.
        while mlflow.active_run():
            mlflow.end_run()
        # kedro-mlflow's hook (one instance per process) keeps the run's id and re-opens it before every node a
        # runner runs, even a runner started without a pipeline run (a test's own), whose MLflow store has no such run
        from kedro_mlflow.framework.hooks.mlflow_hook import mlflow_hook

        mlflow_hook.run_id = None
