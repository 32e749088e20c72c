"""evaluate pipeline: the retain model first (its numbers are the reference), then the original and unlearned
models, each in its own namespace so kedro-viz shows them side by side, then a comparison figure."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_evaluation_sets, compare_models, evaluate, evaluate_retain, template_pool

COMPARED_ROLES = ("original", "unlearned")
PARAMS = ["params:model", "params:data_prep", "params:evaluate"]


def _outputs(role: str) -> list[str]:
    return [f"{role}_evaluation_summary", f"{role}_evaluation_items", f"{role}_evaluation_metrics"]


def evaluate_node(model: str, outputs: list[str]) -> Node:
    """The node that evaluates `model` against the pinned `retain_reference` (wrapped in a namespace by its users)."""
    return Node(
        func=evaluate,
        inputs=[model, "evaluation_sets", "template_pool", "retain_reference", *PARAMS],
        outputs=outputs,
        name="evaluate_model_node",
    )


def evaluation_inputs() -> Pipeline:
    """The evaluation sets and the template pool, shared by every pipeline that evaluates (the same nodes, so
    pipelines summed together run them once)."""
    return Pipeline(
        [
            Node(
                func=build_evaluation_sets,
                inputs=["benchmark_splits", "forget_set", "holdout_set", "params:evaluate"],
                outputs="evaluation_sets",
                name="build_evaluation_sets_node",
            ),
            Node(func=template_pool, inputs="forget_templates", outputs="template_pool", name="template_pool_node"),
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    shared = evaluation_inputs()
    retain = Pipeline(
        [
            Node(
                func=evaluate_retain,
                inputs=["retain_model", "evaluation_sets", "template_pool", *PARAMS],
                outputs=[*_outputs("retain"), "retain_reference"],
                name="evaluate_model_node",
            )
        ],
        namespace="retain",
        inputs={"retain_model", "evaluation_sets", "template_pool"},
        outputs={*_outputs("retain"), "retain_reference"},
        parameters=set(PARAMS),
    )
    compared = [
        Pipeline(
            [evaluate_node(f"{role}_model", _outputs(role))],
            namespace=role,
            inputs={f"{role}_model", "evaluation_sets", "template_pool", "retain_reference"},
            outputs=set(_outputs(role)),
            parameters=set(PARAMS),
        )
        for role in COMPARED_ROLES
    ]
    comparison = Pipeline(
        [
            Node(
                func=compare_models,
                inputs={
                    f"{role}_evaluation_summary": f"{role}_evaluation_summary"
                    for role in ("original", "retain", "unlearned")
                },
                outputs=["evaluation_comparison", "evaluation_comparison_artifact"],
                name="compare_models_node",
            )
        ]
    )
    return shared + retain + sum(compared, Pipeline([])) + comparison
