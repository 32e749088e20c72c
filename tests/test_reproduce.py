"""Every number reproducible from its run (issue 27): `kedro reproduce <run id>` re-runs an unlearn run of the test
environment from its MLflow record and finds every metric identical, at every step of its training curves; a checkout
whose code differs from the run's is refused, naming both commits; every run carries its record (package versions,
hardware, input hashes)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from flat_pipeline.run_record import artifact_sha256, cpu_model, installed_set_sha256

from .kedro_runs import clone_project

pytestmark = pytest.mark.slow

KEDRO = Path(sys.executable).parent / "kedro"
PIPELINES = {"unlearn"}


def _git(project: Path, *args: str) -> str:
    command = ["git", "-c", "user.email=test@example.com", "-c", "user.name=test", *args]
    return subprocess.run(command, cwd=project, check=True, capture_output=True, text=True).stdout.strip()


def _kedro(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [KEDRO, *args]
    return subprocess.run(command, check=False, cwd=project, env=env, capture_output=True, text=True, timeout=900)


def _client(project: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def _runs(project: Path, filter_string: str) -> list:
    client = _client(project)
    experiment = client.get_experiment_by_name("flat_pipeline_test")
    return client.search_runs([experiment.experiment_id], filter_string, order_by=["attributes.start_time ASC"])


@pytest.fixture(scope="module")
def unlearn_run(default_run_project, tmp_path_factory):
    """A clone of the default run's project under git, after `kedro run --pipelines unlearn` at a commit: (the
    project, the run's id)."""
    project = clone_project(default_run_project, tmp_path_factory.mktemp("reproduce") / "project")
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "the code of the run")
    done = _kedro(project, "run", "--env", "test", "--pipelines", "unlearn")
    assert done.returncode == 0, done.stderr[-4000:]
    (run,) = [r for r in _runs(project, "") if set(r.data.tags["kedro_pipelines"].split(",")) == PIPELINES]
    return project, run.info.run_id


def test_an_unlearn_run_reproduced_from_its_id_has_every_metric_identical(unlearn_run):
    project, run_id = unlearn_run
    done = _kedro(project, "reproduce", run_id)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"reproduces run {run_id}: every metric identical" in done.stdout
    (again,) = _runs(project, f"tags.reproduces = '{run_id}'")
    original = _client(project).get_run(run_id)
    assert again.data.metrics["reproduction.largest_difference"] == 0.0
    assert {k: v for k, v in again.data.metrics.items() if not k.startswith("reproduction.")}.keys() == set(
        original.data.metrics
    )
    for key, value in original.data.metrics.items():
        if not key.endswith("seconds"):
            assert again.data.metrics[key] == value, key
    # the same inputs, at the versions the original read
    saved = {k.removeprefix("saved/") for k in original.data.tags if k.startswith("saved/")}
    inputs = {k: v for k, v in original.data.tags.items() if k.startswith("loaded/") and k[7:] not in saved}
    assert inputs and {k: again.data.tags.get(k) for k in inputs} == inputs
    assert set(again.data.tags["kedro_pipelines"].split(",")) == PIPELINES and again.data.tags["kedro_env"] == "test"


def test_a_checkout_whose_code_differs_from_the_runs_is_refused_naming_both_commits(unlearn_run):
    project, run_id = unlearn_run
    commit = _git(project, "rev-parse", "HEAD")
    losses = project / "src" / "flat_pipeline" / "losses.py"
    text = losses.read_text()
    losses.write_text(text + "\n# a change after the run\n")
    try:
        done = _kedro(project, "reproduce", run_id)
    finally:
        losses.write_text(text)
    assert done.returncode != 0
    message = " ".join(done.stderr.split())
    assert f"the run was made at commit {commit}, this checkout is at {commit}-dirty" in message
    assert f"Check out {commit}" in message and "--allow-code-change" in message
    assert not _runs(project, f"tags.reproduces = '{run_id}' and tags.`reproduction.code_differs` != ''")


def test_every_run_records_its_packages_hardware_and_the_sha256_of_its_inputs(unlearn_run):
    project, run_id = unlearn_run
    tags = _client(project).get_run(run_id).data.tags
    for package in ("torch", "transformers", "accelerate", "peft", "datasets", "kedro", "flat_pipeline"):
        assert tags[f"record.{package}"] == importlib.metadata.version(package)
    assert tags["record.installed_sha256"] == installed_set_sha256()
    assert tags["record.cpu"] == cpu_model() and tags["record.gpu_count"] == "0"
    assert tags["record.dtype"] and tags["record.deterministic_algorithms"] in ("True", "False")
    hashed = {k.removeprefix("sha256/") for k in tags if k.startswith("sha256/")}
    assert {"original_model", "forget_templates"} <= hashed
    for name in hashed:
        assert tags[f"sha256/{name}"] == artifact_sha256(Path(tags[f"loaded/{name}"])), name
