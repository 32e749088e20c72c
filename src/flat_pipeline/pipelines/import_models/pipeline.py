"""import_models pipeline: one node per model role."""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from .nodes import import_model


def _importer(role: str):
    return update_wrapper(partial(import_model, role=role), import_model)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=_importer(role),
                inputs=["params:import_models", "params:model"],
                outputs=f"{role}_model",
                name=f"import_{role}_model_node",
                tags="train",  # stands in for training the model here
            )
            for role in ("original", "retain")
        ]
    )
