"""notebooks/leaderboard.ipynb, executed headless: it loads the project with Kedro's IPython extension, reads the
latest benchmark from the catalog and MLflow, and shows its figures inline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Kedro's IPython display colours plain-text results


def execute(project: Path) -> list:
    """The notebook's cells after running it in a fresh kernel from `project/notebooks`, environment `test`."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(project / "notebooks" / "leaderboard.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(project / "notebooks")}}).execute()
    return notebook.cells


def results(cell) -> list[str]:
    """The plain-text results and printed text of a code cell."""
    texts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "execute_result":
            texts.append(ANSI.sub("", output["data"]["text/plain"]))
        elif output["output_type"] == "stream":
            texts.append(output["text"])
    return texts


def cell_with(cells: list, source: str):
    return next(cell for cell in cells if cell["cell_type"] == "code" and source in cell["source"])


def assert_figures_shown(cells: list) -> None:
    """Every cell that plots shows its figure inline (a PNG in the cell's outputs)."""
    plotting = [cell for cell in cells if cell["cell_type"] == "code" and "plt.show()" in cell["source"]]
    assert len(plotting) == 3
    for cell in plotting:
        images = [
            output
            for output in cell["outputs"]
            if output["output_type"] in ("display_data", "execute_result") and "image/png" in output.get("data", {})
        ]
        assert images, f"no inline figure from:\n{cell['source']}"


@pytest.mark.slow
def test_the_notebook_plots_a_hand_made_benchmark(project, monkeypatch):
    """Fast: a leaderboard version and an MLflow store as a benchmark leaves them (a parent run, one child per
    method), without running one."""
    import pandas as pd
    from mlflow import MlflowClient

    from flat_pipeline.benchmark_runs import PARENT_TAG

    version = project / "data/test/08_reporting/leaderboard.csv/2026-01-01T00.00.00.000Z"
    version.mkdir(parents=True)
    rows = [
        ("flat_kl", 0.3, 0.45, "unlearned"),
        ("npo", 0.02, 0.41, "unlearned"),
        ("original", 1e-9, 0.5, "reference"),
        ("retain", 1.0, 0.48, "reference"),
    ]
    table = pd.DataFrame(rows, columns=["method", "forget_quality", "model_utility", "kind"])
    table.to_csv(version / "leaderboard.csv", index=False)
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment_id = client.create_experiment("flat_pipeline_test", artifact_location=(project / "mlruns").as_uri())
    parent = client.create_run(experiment_id).info.run_id
    for method, forget_quality, model_utility, _ in rows[:2]:
        child = client.create_run(experiment_id, tags={PARENT_TAG: parent, "method": method.replace("_", "-")})
        client.log_metric(child.info.run_id, "forget_quality", forget_quality)
        client.log_metric(child.info.run_id, "model_utility", model_utility)
        client.set_terminated(child.info.run_id)
    client.set_terminated(parent)

    monkeypatch.setenv("KEDRO_ENV", "test")
    cells = execute(project)
    assert "flat_kl" in results(cell_with(cells, 'catalog.load("leaderboard_table")'))[0]
    found = "".join(results(cell_with(cells, "latest_benchmark(experiment)")))
    assert f"benchmark run {parent} (FINISHED), 2 methods" in found
    assert "flat-kl" in found and "npo" in found
    assert_figures_shown(cells)


@pytest.mark.slow
def test_the_notebook_reads_the_leaderboard(benchmarked_project, monkeypatch):
    from flat_pipeline.pipelines.benchmark.pipeline import BENCHMARK_METHODS

    monkeypatch.setenv("KEDRO_ENV", "test")
    cells = execute(benchmarked_project)
    table = results(cell_with(cells, 'catalog.load("leaderboard_table")'))[0]
    assert "flat_kl" in table and "retain" in table
    found = "".join(results(cell_with(cells, "latest_benchmark(experiment)")))
    assert f"(FINISHED), {len(BENCHMARK_METHODS)} methods" in found  # one child run per method
    assert_figures_shown(cells)
