"""templates pipeline definition."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_forget_templates


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=build_forget_templates,
                inputs=["forget_set", "params:templates", "params:model"],
                outputs="forget_templates",
                name="build_forget_templates_node",
                tags="data",
            ),
        ]
    )
