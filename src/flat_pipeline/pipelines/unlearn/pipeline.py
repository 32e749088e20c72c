"""unlearn pipeline definition."""

from kedro.pipeline import Node, Pipeline

from .nodes import unlearn_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=unlearn_model,
                inputs=[
                    "original_model",
                    "forget_templates",
                    "retain_set",
                    "params:model",
                    "params:unlearn",
                    "params:templates",
                ],
                outputs=["unlearned_model", "unlearn_metrics"],
                name="unlearn_model_node",
            ),
        ]
    )
