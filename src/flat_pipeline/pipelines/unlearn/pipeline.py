"""unlearn pipeline definition."""

from kedro.pipeline import Node, Pipeline

from .nodes import unlearn_model


def unlearn_node(unlearn_parameters: str = "params:unlearn") -> Node:
    """The unlearning node; the benchmark pipeline feeds it each method's parameters instead of `params:unlearn`."""
    return Node(
        func=unlearn_model,
        inputs=[
            "original_model",
            "forget_templates",
            "retain_set",
            "params:model",
            unlearn_parameters,
            "params:templates",
        ],
        outputs=["unlearned_model", "unlearn_metrics"],
        name="unlearn_model_node",
        tags="unlearn",
    )


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([unlearn_node()])
