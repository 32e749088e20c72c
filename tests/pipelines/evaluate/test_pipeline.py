"""`kedro run --pipelines evaluate_original` before any retain model was evaluated: it runs, and leaves out only the
metrics that compare with the retain model's numbers, saying which."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import mlflow
from kedro.framework.session import KedroSession

from tests.kedro_runs import run_session

PARITY = Path(__file__).parents[2] / "fixtures" / "open_unlearning_tiny"


def test_evaluate_original_runs_without_a_retain_reference(project, caplog):
    raw = project / "data" / "01_raw" / "tofu"
    shutil.copytree(PARITY / "data", raw)
    (raw / "idontknow.jsonl").write_text("I don't know.\nI have no idea.")
    params = {
        "model": {"prompt": {"format": "phi-1_5"}, "dtype": "float32"},
        "import_models": {"original": str(PARITY / "models" / "full")},
    }
    with KedroSession.create(project_path=project, env="tofu", runtime_params=params) as session:
        session.run(pipeline_names=["import_models"], node_names=["import_original_model_node"])
    while mlflow.active_run():
        mlflow.end_run()
    with caplog.at_level(logging.WARNING):
        run_session(project, ["prepare", "evaluate_original"], params, env="tofu")
    assert not list(project.glob("data/tofu/07_model_output/retain_reference.json/*"))
    (summary,) = project.glob("data/tofu/08_reporting/original_evaluation_summary.json/*/*.json")
    metrics = json.loads(summary.read_text())["metrics"]
    assert {"model_utility", "forget_truth_ratio", "mia_min_k", "extraction_strength"} <= set(metrics)
    assert not {"forget_quality", "privleak"} & set(metrics)
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "retain_reference.json has no saved version" in warnings
    assert "forget_quality" in warnings and "privleak" in warnings
