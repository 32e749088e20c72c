"""data_prep pipeline definition: the benchmark's raw files (catalog `benchmark_source`) to the role sets."""

from kedro.pipeline import Node, Pipeline

from .nodes import load_benchmark_source, select_unlearning_sets


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=load_benchmark_source,
                inputs=["benchmark_source", "params:data_prep"],
                outputs="benchmark_splits",
                name="load_benchmark_node",
                tags="data",
            ),
            Node(
                func=select_unlearning_sets,
                inputs=["benchmark_splits", "params:data_prep"],
                outputs=["forget_set", "retain_set", "holdout_set"],
                name="select_unlearning_sets_node",
                tags="data",
            ),
        ]
    )
