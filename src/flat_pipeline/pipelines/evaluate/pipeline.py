"""evaluate pipeline: the retain model first (its numbers are the reference), then the original and unlearned
models, each in its own namespace so kedro-viz shows them side by side, then a comparison figure. Each role is also
registered alone (`evaluate_retain`, `evaluate_original`, `evaluate_unlearned`), and so is the base model every
finetune starts from (`evaluate_base`, in the default run: what a model that never saw the benchmark's authors
scores; not in `evaluate`, which also serves imported models, made without a base model)."""

from collections.abc import Callable
from typing import Any

from kedro.pipeline import Node, Pipeline

from flat_pipeline.pipelines.finetune.pipeline import BASE_MODEL

from .nodes import build_evaluation_sets, compare_models, evaluate, evaluate_retain, template_pool

# The retain model first: its numbers are the reference the others are compared with.
ROLES = ("retain", "original", "unlearned")
# The dataset each role's model is read from: `<role>_model`, and the base model's transcoded entry.
MODEL_DATASETS = {role: f"{role}_model" for role in ROLES} | {"base": BASE_MODEL}
PARAMS = ["params:model", "params:data_prep", "params:evaluate"]
# Evaluations that run without a saved retain reference (none evaluated yet), leaving out what compares with it; the
# benchmark's and tune's, whose leaderboards rank by forget_quality, need one (hooks/preflight.py).
REFERENCE_OPTIONAL_NODES = frozenset(f"{role}.evaluate_model_node" for role in ("original", "unlearned", "base"))


def _outputs(role: str) -> list[str]:
    return [f"{role}_evaluation_summary", f"{role}_evaluation_items", f"{role}_evaluation_metrics"]


def evaluate_node(model: str, outputs: list[str], func: Callable[..., Any] = evaluate) -> Node:
    """The node that evaluates `model` against the pinned `retain_reference` (wrapped in a namespace by its users);
    `func` takes `evaluate`'s arguments and returns `outputs`."""
    return Node(
        func=func,
        inputs=[model, "evaluation_sets", "template_pool", "retain_reference", *PARAMS],
        outputs=outputs,
        name="evaluate_model_node",
        tags="evaluate",
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
                tags="evaluate",
            ),
            Node(
                func=template_pool,
                inputs="forget_templates",
                outputs="template_pool",
                name="template_pool_node",
                tags="evaluate",
            ),
        ]
    )


def role_pipeline(role: str) -> Pipeline:
    """One model's evaluation in its own namespace, with the shared sets: registered as `evaluate_<role>`, so models
    can be evaluated without the others (imported original and retain models before any unlearning)."""
    if role == "retain":
        node = Node(
            func=evaluate_retain,
            inputs=["retain_model", "evaluation_sets", "template_pool", *PARAMS],
            outputs=[*_outputs("retain"), "retain_reference"],
            name="evaluate_model_node",
            tags="evaluate",
        )
        outputs = {*_outputs("retain"), "retain_reference"}
        inputs = {"retain_model", "evaluation_sets", "template_pool"}
    else:
        node = evaluate_node(MODEL_DATASETS[role], _outputs(role))
        outputs = set(_outputs(role))
        inputs = {MODEL_DATASETS[role], "evaluation_sets", "template_pool", "retain_reference"}
    evaluated = Pipeline([node], namespace=role, inputs=inputs, outputs=outputs, parameters=set(PARAMS))
    return evaluation_inputs() + evaluated


def create_pipeline(**kwargs) -> Pipeline:
    comparison = Pipeline(
        [
            Node(
                func=compare_models,
                inputs={f"{role}_evaluation_summary": f"{role}_evaluation_summary" for role in ROLES},
                outputs=["evaluation_comparison", "evaluation_comparison_artifact"],
                name="compare_models_node",
                tags="report",
            )
        ]
    )
    return sum((role_pipeline(role) for role in ROLES), Pipeline([])) + comparison
