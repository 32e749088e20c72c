"""data_prep pipeline definition."""

from kedro.pipeline import Node, Pipeline

from .nodes import load_benchmark, select_unlearning_sets


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=load_benchmark,
                inputs="params:data_prep",
                outputs="benchmark_splits",
                name="load_benchmark_node",
            ),
            Node(
                func=select_unlearning_sets,
                inputs=["benchmark_splits", "params:data_prep"],
                outputs=["forget_set", "retain_set", "holdout_set"],
                name="select_unlearning_sets_node",
            ),
        ]
    )
