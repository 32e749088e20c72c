"""Nodes of the unlearn pipeline."""

from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset, DatasetDict

from flat_pipeline.evaluation import EvalSets, EvaluateConfig, RetainReference
from flat_pipeline.models.loading import ModelBundle
from flat_pipeline.pipelines.evaluate.nodes import build_evaluation_sets
from flat_pipeline.prompts import PromptFormat
from flat_pipeline.training.methods import SHARED_DEFAULTS
from flat_pipeline.training.tracking import log_method_defaults
from flat_pipeline.training.trajectory import Trajectory, TrajectoryConfig
from flat_pipeline.training.unlearn import UnlearnConfig, unlearn

logger = logging.getLogger(__name__)


def trajectory_sets(
    unlearn_params: dict[str, Any],
    benchmark: DatasetDict,
    forget_set: Dataset,
    holdout_set: Dataset,
    evaluate_params: dict[str, Any],
) -> EvalSets:
    """The evaluation sets a trajectory (`unlearn.trajectory`) evaluates on, built as the evaluate pipeline builds
    them; none (an empty mapping) when `unlearn.trajectory.every` is null, as nothing then reads them.

    Args:
        unlearn_params: `unlearn` parameters; only `trajectory` is read.
        benchmark, forget_set, holdout_set, evaluate_params: what `build_evaluation_sets` takes.
    """
    if not TrajectoryConfig.from_params(unlearn_params.get("trajectory"), "unlearn").enabled:
        return {}
    return build_evaluation_sets(benchmark, forget_set, holdout_set, evaluate_params)


def unlearn_model(
    original_model: ModelBundle,
    forget_templates: Dataset,
    retain_set: Dataset,
    model_params: dict[str, Any],
    unlearn_params: dict[str, Any],
    templates_params: dict[str, Any],
    evaluation_sets: EvalSets | None = None,
    template_pool: list[str] | None = None,
    evaluate_params: dict[str, Any] | None = None,
    data_prep_params: dict[str, Any] | None = None,
    retain_reference: dict[str, Any] | None = None,
) -> tuple[ModelBundle, dict[str, Any]]:
    """Unlearn the forget answers from the original model with the configured method (FLAT by default).

    Args:
        original_model: the finetuned model (loaded fresh from the catalog; it is trained in place).
        forget_templates: prompt, forget answer and template candidates per forget item.
        retain_set: retain QA; read only by methods that need retain data (not FLAT).
        model_params: `model` parameters (the prompt format).
        unlearn_params: `unlearn` parameters (method, its settings, optimiser, epochs, trajectory, ...).
        templates_params: `templates` parameters (pairing and seed of the template candidates).
        evaluation_sets, template_pool: what the evaluate pipeline evaluates on; read only by a trajectory
            (`unlearn.trajectory`; without one the sets may be empty).
        evaluate_params, data_prep_params: `evaluate` (the trajectory's evaluation settings) and `data_prep` (the
            forget split the retain reference must match); read only by a trajectory.
        retain_reference: the retain model's numbers, for trajectory metrics that compare with them (forget_quality,
            privleak); only the benchmark's unlearning is given it.

    Returns:
        The unlearned model, and its per-step history: loss, learning rate, the method's own terms and, with a
        trajectory, `trajectory/<metric>` at each point.

    Raises (so Kedro saves no model version): ParameterError for a trajectory metric the sets or reference cannot
    serve (before training), FloatingPointError at a non-finite loss or gradient norm, TrainingError for a collapsed
    model, CheckpointMismatch when `unlearn.output_dir` holds another training's checkpoints.
    """
    config = UnlearnConfig.from_params({**unlearn_params, "pairing": templates_params["pairing"]})
    log_method_defaults(unlearn_params, {name: getattr(config, name) for name in SHARED_DEFAULTS})
    # one line that says what this run trains with (divergence and score matter to FLAT only)
    logger.info(
        "unlearn starts: method=%s divergence=%s score=%s learning_rate=%g epochs=%g batch_size=%d",
        config.method,
        config.divergence,
        config.score,
        config.learning_rate,
        config.num_train_epochs,
        config.per_device_train_batch_size,
    )
    prompt = PromptFormat.from_params(model_params)
    trajectory = None
    if config.trajectory_settings.enabled:  # checked against the sets and the reference before any training
        if not evaluation_sets or evaluate_params is None:
            raise ValueError("unlearn.trajectory needs the evaluation sets and the evaluate parameters")
        trajectory = Trajectory(
            config.trajectory_settings,
            evaluation_sets,
            EvaluateConfig.from_params(evaluate_params.get("settings", {})),
            prompt=prompt,
            templates=template_pool or (),
            reference=None if retain_reference is None else RetainReference(**retain_reference),
            forget_split=(data_prep_params or {}).get("forget_split"),
            tokenizer=original_model.tokenizer,
        )
    # the curves stream into the MLflow run as train/unlearn/loss, train/unlearn/forget_score, ... while it trains
    return unlearn(
        original_model, forget_templates, config, prompt,
        retain_rows=retain_set, track_as="unlearn", trajectory=trajectory,
    )  # fmt: skip
