"""The benchmark's wiring: each method's namespace hands the leaderboard its summary and nothing else."""

from __future__ import annotations

import pandas as pd
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from flat_pipeline.pipelines.benchmark.nodes import method_record
from flat_pipeline.pipelines.benchmark.pipeline import BENCHMARK_METHODS, create_pipeline, summary_of


def test_the_leaderboard_reads_every_methods_summary_by_its_method_name():
    pipeline = create_pipeline()
    board = pipeline.only_nodes("leaderboard_node")
    summaries = {summary_of(m) for m in BENCHMARK_METHODS} | {
        "original_evaluation_summary",
        "retain_evaluation_summary",
    }
    assert board.inputs() == summaries | {"params:benchmark"}
    # a method's namespace has one output, its summary: its item table and training history are read inside it
    # (kedro-viz draws every unread output of a namespace beside its collapsed box)
    for method in BENCHMARK_METHODS:
        assert pipeline.only_nodes_with_namespaces([method]).outputs() == {summary_of(method)}

    quality = {name: (i + 1) / 100 for i, name in enumerate(BENCHMARK_METHODS)}
    catalog = DataCatalog(
        {
            "params:benchmark": MemoryDataset({"title": "t"}),
            "original_evaluation_summary": MemoryDataset({"metrics": {"forget_quality": 1e-9, "model_utility": 0.6}}),
            "retain_evaluation_summary": MemoryDataset({"metrics": {"forget_quality": 1.0, "model_utility": 0.5}}),
            **{
                summary_of(m): MemoryDataset({"metrics": {"forget_quality": q, "model_utility": q}})
                for m, q in quality.items()
            },
        }
    )
    SequentialRunner().run(board, catalog)
    table = catalog.load("leaderboard_table")
    assert dict(zip(table["method"], table["forget_quality"], strict=True)) == {
        "original": 1e-9,
        "retain": 1.0,
        **quality,
    }


def test_each_methods_unlearning_reads_the_retain_reference_and_the_benchmarks_trajectory():
    """The benchmark loads the retain reference for its evaluations anyway: its unlearning nodes read it too, for
    trajectory metrics that compare with it (forget_quality, privleak)."""
    pipeline = create_pipeline()
    for method in BENCHMARK_METHODS:
        nodes = {node.name: node for node in pipeline.only_nodes_with_namespaces([method]).nodes}
        assert "retain_reference" in nodes[f"{method}.unlearn_model_node"].inputs
        assert "params:benchmark.trajectory" in nodes[f"{method}.method_parameters_node"].inputs


def test_a_methods_record_is_its_summary_with_its_training_steps_and_items_per_set():
    summary = {"model": "m", "metrics": {"forget_quality": 0.5}}
    items = pd.DataFrame({"set": ["forget", "forget", "retain"], "index": [0, 1, 0]})
    record = method_record(summary, items, {"unlearn_loss": [3.0, 2.5, 2.0], "grad_norm": [1.0, 1.0, 1.0]})
    assert record == {
        **summary,
        "training": {"steps": 3, "last_loss": 2.0},
        "items": {"forget": 2, "retain": 1},
        "mlflow_run_id": None,
    }  # no MLflow run here
