"""finetune pipeline definition: the base model both roles start from (saved once as `base_model`), then one
namespaced copy of the training node per model role (`finetune.original`, `finetune.retain`), each of which loads the
saved base model afresh."""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from .nodes import build_training_sets, finetune_model, prepare_base_model, prepare_tokenizer

MODEL_ROLES = ("original", "retain")
# The saved base model as a model; templates read the same versions as a folder path (`base_model@folder`), which
# loads no weights where they are not needed (Kedro transcoding: one dataset, two ways of reading it).
BASE_MODEL = "base_model@model"


def _finetune_template(role: str) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=update_wrapper(partial(finetune_model, role=role), finetune_model),
                inputs=["train_set", "base_model", "params:model", "params:finetune"],
                outputs=["model", "training_metrics"],
                name="finetune_model_node",
                tags="train",
            )
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    shared = Pipeline(
        [
            Node(
                func=build_training_sets,
                inputs=["benchmark_splits", "forget_set", "holdout_set", "params:finetune", "params:data_prep"],
                outputs=["original_train_set", "retain_train_set"],
                name="build_training_sets_node",
                tags="data",
            ),
            Node(
                func=prepare_tokenizer,
                inputs=["benchmark_splits", "params:model"],
                outputs="base_tokenizer",
                name="prepare_tokenizer_node",
                tags="train",
            ),
            Node(
                func=prepare_base_model,
                inputs=["base_tokenizer", "params:model"],
                outputs=[BASE_MODEL, "base_model_record"],
                name="prepare_base_model_node",
                tags="train",
            ),
        ]
    )
    per_role = [
        Pipeline(
            _finetune_template(role),
            # under `finetune.`: the evaluate pipeline's namespaces are the roles themselves, and one namespace for
            # both would make kedro-viz draw training and evaluation of a role as one box (and its layers a cycle)
            namespace=f"finetune.{role}",
            inputs={"train_set": f"{role}_train_set", "base_model": BASE_MODEL},
            outputs={"model": f"{role}_model", "training_metrics": f"{role}_training_metrics"},
            parameters={"params:model": "params:model", "params:finetune": "params:finetune"},
        )
        for role in MODEL_ROLES
    ]
    return shared + sum(per_role, Pipeline([]))
