"""The benchmark's wiring: each method's namespace hands the leaderboard its summary and nothing else."""

from __future__ import annotations

from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from flat_pipeline.pipelines.benchmark.pipeline import BENCHMARK_METHODS, create_pipeline, summary_of


def test_the_leaderboard_reads_every_methods_summary_by_its_method_name():
    pipeline = create_pipeline()
    board = pipeline.only_nodes("leaderboard_node")
    summaries = {summary_of(m) for m in BENCHMARK_METHODS} | {
        "original_evaluation_summary",
        "retain_evaluation_summary",
    }
    assert board.inputs() == summaries | {"params:benchmark"}
    # a method's other outputs stay in its namespace; only its summary leaves it
    for method in BENCHMARK_METHODS:
        outputs = pipeline.only_nodes_with_namespaces([method]).outputs()
        assert outputs == {summary_of(method), *(f"{method}.{name}" for name in ("unlearn_metrics", "evaluation_items",
                                                                                  "evaluation_metrics"))}  # fmt: skip

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
