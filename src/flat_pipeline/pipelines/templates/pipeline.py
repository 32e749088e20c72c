"""templates pipeline definition."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_forget_templates

# The base model's saved versions as a folder path: a transcoded view of the finetune pipeline's base_model@model
BASE_MODEL_FOLDER = "base_model@folder"


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=build_forget_templates,
                # the base model's folder, for generated templates (read as a path: no weights loaded otherwise)
                inputs=["forget_set", "params:templates", "params:model", BASE_MODEL_FOLDER],
                outputs="forget_templates",
                name="build_forget_templates_node",
                tags="data",
            ),
        ]
    )
