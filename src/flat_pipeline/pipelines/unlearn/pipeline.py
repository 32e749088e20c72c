"""unlearn pipeline definition."""

from kedro.pipeline import Node, Pipeline

from flat_pipeline.pipelines.evaluate.pipeline import evaluation_inputs

from .nodes import unlearn_model


def unlearn_node(unlearn_parameters: str = "params:unlearn", *, with_reference: bool = False) -> Node:
    """The unlearning node; the benchmark pipeline feeds it each method's parameters instead of `params:unlearn`.

    The evaluation sets and template pool serve a trajectory (`unlearn.trajectory`). `with_reference`: it also reads
    `retain_reference`, for trajectory metrics that compare with it; only the benchmark's, which loads the reference
    anyway, so that `kedro run --pipelines unlearn` needs no retain model's evaluation.
    """
    inputs = {
        "original_model": "original_model",
        "forget_templates": "forget_templates",
        "retain_set": "retain_set",
        "evaluation_sets": "evaluation_sets",
        "template_pool": "template_pool",
        "model_params": "params:model",
        "unlearn_params": unlearn_parameters,
        "templates_params": "params:templates",
        "evaluate_params": "params:evaluate",
        "data_prep_params": "params:data_prep",
    }
    if with_reference:
        inputs["retain_reference"] = "retain_reference"
    return Node(
        func=unlearn_model,
        inputs=inputs,
        outputs=["unlearned_model", "unlearn_metrics"],
        name="unlearn_model_node",
        tags="unlearn",
    )


def create_pipeline(**kwargs) -> Pipeline:
    # the evaluation sets are the evaluate pipeline's own nodes: a run of both builds them once
    return evaluation_inputs() + Pipeline([unlearn_node()])
