"""What importing the project does to the process: nothing to matplotlib's backend (a notebook that loads the Kedro
session keeps its inline plots), and no MLflow warning about kedro-mlflow's code on every run. Each check runs in a
fresh interpreter: in this one, other tests have imported everything already."""

from __future__ import annotations

import subprocess
import sys


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return done.stdout + done.stderr


def test_the_nodes_leave_matplotlibs_backend_as_it_was():
    output = run_python(
        "import io, sys, matplotlib\n"
        "matplotlib.use('svg')  # a backend other than Agg, as a notebook's inline one is\n"
        "from flat_pipeline.pipelines.benchmark.nodes import leaderboard\n"
        "from flat_pipeline.pipelines.evaluate.nodes import compare_models\n"
        "figure, _ = compare_models(original_evaluation_summary={'metrics': {'forget_quality': 0.5}})\n"
        "figure.savefig(io.BytesIO(), format='png')  # a standalone figure renders without any backend\n"
        "summaries = {'npo.evaluation_summary': {'metrics': {'forget_quality': 0.1, 'model_utility': 0.4}}}\n"
        "leaderboard({}, **summaries)[2].savefig(io.BytesIO(), format='png')\n"
        "print('backend', matplotlib.get_backend(), 'pyplot', 'matplotlib.pyplot' in sys.modules)\n"
    )
    assert "backend svg pyplot False" in output


def test_kedro_mlflow_loads_without_mlflows_predict_type_hint_warning():
    warning = "Addtypehintstothe`predict`method"  # compared without spaces: the log handler wraps lines
    # kedro-mlflow alone: MLflow warns (so the check below can fail)
    assert warning in "".join(run_python("import kedro_mlflow.framework.hooks").split())
    # as Kedro loads it, after the project's settings
    assert warning not in "".join(run_python("import flat_pipeline.settings, kedro_mlflow.framework.hooks").split())
