"""import_retain_logs pipeline definition."""

from kedro.pipeline import Node, Pipeline

from flat_pipeline.pipelines.import_models.nodes import import_retain_logs


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=import_retain_logs,
                inputs=["params:import_models", "forget_set", "params:data_prep"],
                outputs="retain_reference",
                name="import_retain_logs_node",
                tags="evaluate",  # stands in for evaluating the retain model here
            )
        ]
    )
