"""unlearn pipeline definition."""

from kedro.pipeline import Node, Pipeline

from flat_pipeline.pipelines.evaluate.pipeline import evaluation_inputs

from .nodes import trajectory_sets, unlearn_model


def unlearn_node(
    unlearn_parameters: str = "params:unlearn", *, with_reference: bool = False, sets: str = "evaluation_sets"
) -> Node:
    """The unlearning node; the benchmark pipeline feeds it each method's parameters instead of `params:unlearn`.

    The evaluation sets (dataset `sets`) and template pool serve a trajectory (`unlearn.trajectory`).
    `with_reference`: it also reads `retain_reference`, for trajectory metrics that compare with it; only the
    benchmark's, which loads the reference anyway, so that `kedro run --pipelines unlearn` needs no retain model's
    evaluation.
    """
    inputs = {
        "original_model": "original_model",
        "forget_templates": "forget_templates",
        "retain_set": "retain_set",
        "evaluation_sets": sets,
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
    # The evaluation sets serve only a trajectory, so this pipeline builds its own, and only when unlearn.trajectory
    # is on (the benchmark's unlearnings read the sets its evaluations are built from). The template pool is the
    # evaluate pipeline's own node: a run of both builds it once.
    sets = Node(
        func=trajectory_sets,
        inputs=["params:unlearn", "benchmark_splits", "forget_set", "holdout_set", "params:evaluate"],
        outputs="trajectory_sets",
        name="trajectory_sets_node",
        tags="unlearn",
    )
    pool = evaluation_inputs().only_nodes("template_pool_node")
    return pool + Pipeline([sets, unlearn_node(sets="trajectory_sets")])
