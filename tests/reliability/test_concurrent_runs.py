"""Two `kedro run`s at once in one project folder each evaluate, summarise and log their own model.

Run A (GA, many epochs) starts first; run B (FLAT, one epoch) starts a moment later and saves its unlearned model
while A still trains. A's evaluation then loads a model: without RunVersionsHook, the newest version (B's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from tests.kedro_runs import clone_project

pytestmark = pytest.mark.slow

PIPELINES = "unlearn,evaluate_unlearned"


def _start(project: Path, params: str) -> subprocess.Popen:
    kedro = Path(sys.executable).parent / "kedro"
    return subprocess.Popen(
        [kedro, "run", "--env", "test", "--pipelines", PIPELINES, "--params", params],
        cwd=project,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_two_runs_at_once_each_evaluate_and_log_their_own_model(default_run_project, tmp_path_factory):
    project = clone_project(default_run_project, tmp_path_factory.mktemp("concurrent") / "project")
    long_run = _start(project, "unlearn.method=ga,unlearn.num_train_epochs=30")
    time.sleep(2)
    short_run = _start(project, "unlearn.method=flat,unlearn.divergence=kl")
    outputs = {name: run.communicate(timeout=600)[0].decode() for name, run in (("ga", long_run), ("flat", short_run))}
    for name, run in (("ga", long_run), ("flat", short_run)):
        assert run.returncode == 0, outputs[name][-4000:]

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(
        experiment_names=["flat_pipeline_test"], filter_string="tags.kedro_pipelines != '__default__'"
    )
    assert sorted(runs["tags.method"]) == ["flat-kl", "ga"]
    saved_models = set()
    for run_id in runs["run_id"]:
        run = client.get_run(run_id)
        tags, metrics = run.data.tags, run.data.metrics
        saved_model = tags["saved/unlearned_model"]
        saved_models.add(saved_model)
        assert tags["loaded/unlearned_model"] == saved_model, tags["method"]  # the model it saved, not the other's
        summary_path = Path(tags["saved/unlearned_evaluation_summary"])
        summary = json.loads(summary_path.read_text())
        assert summary["model"] == saved_model  # the summary is of its own model
        for name in ("forget_quality", "model_utility", "forget_Q_A_ROUGE"):
            assert metrics[f"unlearned.{name}"] == pytest.approx(summary["metrics"][name], rel=1e-9, abs=1e-12)
    assert len(saved_models) == 2
