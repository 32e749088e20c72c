"""Per-epoch (or every-N-steps) evaluation while a model unlearns: the method's forget / utility curve in one run.

A `Trajectory` evaluates the training model on a subset of the evaluation metrics (`flat_pipeline.evaluation`) at
the end of every epoch or every `every` optimiser steps, keeps the values as a history (`trajectory/<metric>`,
merged into the unlearning's history) and logs them into the active MLflow run with the optimiser step. Evaluating
leaves the training as it was: no gradients, the model back in train mode and every random state restored, so the
final weights are those of a run without it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from flat_pipeline.config import ParameterError, check_number, config_from_params, nearest
from flat_pipeline.training.common import History
from flat_pipeline.training.tracking import TRAJECTORY_PREFIX, log_trajectory_metrics

logger = logging.getLogger(__name__)

EVERY_EPOCH = "epoch"


@dataclass
class TrajectoryConfig:
    """A `trajectory:` parameter block (of `unlearn`, or a benchmark method's merged parameters)."""

    every: str | int | None = None  # "epoch", a number of optimiser steps, or None: no trajectory
    metrics: list[str] = field(default_factory=list)  # any of flat_pipeline.evaluation.METRICS
    max_items: int | None = 50  # metrics that generate answer the first max_items items of each set (None: all)
    at_start: bool = True  # also evaluate before the first step: the curve starts at the start model
    block: InitVar[str] = "unlearn.trajectory"  # names the parameters in messages

    def __post_init__(self, block: str) -> None:
        self.block = block
        if self.every is not None and self.every != EVERY_EPOCH:
            if isinstance(self.every, str):  # a typo of "epoch", not a number of steps
                raise ParameterError(
                    f"parameter {block}.every: expected 'epoch', a number of optimiser steps or null, got "
                    f"{self.every!r}{nearest(self.every, [EVERY_EPOCH])}"
                )
            check_number(f"{block}.every", self.every, minimum=1, integer=True, optional=True)
        if not isinstance(self.metrics, list | tuple) or not all(isinstance(m, str) for m in self.metrics):
            raise ParameterError(f"parameter {block}.metrics: expected a list of metric names, got {self.metrics!r}")
        self.metrics = list(self.metrics)
        if self.metrics:
            from flat_pipeline.evaluation import METRICS  # the evaluation stack loads only when metrics are named

            unknown = [name for name in self.metrics if name not in METRICS]
            if unknown:
                raise ParameterError(
                    f"parameter {block}.metrics: unknown metric(s) {unknown}{nearest(unknown[0], METRICS)}; known: "
                    f"{', '.join(METRICS)}"
                )
        if self.every is not None and not self.metrics:
            raise ParameterError(
                f"parameter {block}.metrics: every={self.every!r} evaluates nothing without metrics; name some (e.g. "
                f"forget_truth_ratio) or set every: null"
            )
        check_number(f"{block}.max_items", self.max_items, minimum=1, integer=True, optional=True)
        if not isinstance(self.at_start, bool):
            raise ParameterError(f"parameter {block}.at_start: expected true or false, got {self.at_start!r}")

    @property
    def enabled(self) -> bool:
        return self.every is not None

    @property
    def reference_metrics(self) -> list[str]:
        """The requested metrics that compare with the retain reference (forget_quality, privleak, ...)."""
        if not self.metrics:
            return []
        from flat_pipeline.evaluation import METRICS

        return [name for name in self.metrics if METRICS[name].needs_reference]

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, block: str) -> TrajectoryConfig:
        """From the `trajectory` block inside `block` (e.g. `unlearn`); unknown keys name the nearest known one."""
        if params is not None and not isinstance(params, Mapping):
            raise ParameterError(f"parameter {block}.trajectory: expected a mapping of settings, got {params!r}")
        return config_from_params(cls, params or {}, f"{block}.trajectory")


class Trajectory:
    """Evaluates a training model at the points its config names and keeps the values.

    `sets`, `evaluate_config`, `prompt` and `templates` are what `evaluate_model` takes. Teacher-forced metrics score
    the items the final evaluation scores, so their last point is the final evaluation's number (forget_quality's
    p-value depends on how many items it compares); metrics that generate (ROUGE, EM, model_utility, ...) answer only
    the first `max_items` of each set. `reference` (the pinned `RetainReference`) is needed only by metrics that
    compare with it; `forget_split` and `tokenizer` check it as the evaluate node does. Everything is checked at
    construction, before any training. `track`: also log each point into the active MLflow run.
    """

    def __init__(
        self,
        config: TrajectoryConfig,
        sets: Mapping[str, Any],
        evaluate_config: Any,
        *,
        prompt: Any = None,
        templates: Sequence[str] = (),
        reference: Any = None,
        forget_split: str | None = None,
        tokenizer: Any = None,
        track: bool = True,
    ) -> None:
        from flat_pipeline.evaluation import METRICS, check_metrics, tokenizer_fingerprint

        if not config.enabled:
            raise ValueError(f"parameter {config.block}.every is null: no trajectory to measure")
        check_metrics(config.metrics, sets, parameter=f"{config.block}.metrics")
        self.config, self.sets, self.templates, self.track = config, dict(sets), list(templates), track
        self.prompt = prompt
        # teacher-forced metrics as the final evaluation has them; generation, the costly part, on fewer items
        caps = [cap for cap in (config.max_items, evaluate_config.max_items) if cap is not None]
        self.groups = [
            (evaluate_config, [name for name in config.metrics if not METRICS[name].generates]),
            (replace(evaluate_config, max_items=min(caps) if caps else None),
             [name for name in config.metrics if METRICS[name].generates]),
        ]  # fmt: skip
        self.reference = None
        needing = config.reference_metrics
        if needing:
            if reference is None or tokenizer is None:
                raise ParameterError(
                    f"parameter {config.block}.metrics: {needing} compare with the retain model's numbers "
                    f"(retain_reference), which this unlearning is not given"
                )
            forget, cap = len(sets["forget"]), evaluate_config.max_items
            reference.check_holds(needing)
            reference.check(
                forget_split or reference.forget_split,
                tokenizer_fingerprint(tokenizer),
                forget if cap is None else min(forget, cap),
            )
            self.reference = reference
        self.points: list[dict[str, float]] = []  # one per measurement: step, epoch and every metric

    def measure(self, model: Any, tokenizer: Any, step: int, epoch: float) -> dict[str, float]:
        """Evaluate `model` now, keep and log the values; the model, its mode and every random state as they were."""
        from flat_pipeline.evaluation import EvalContext, run_metrics
        from flat_pipeline.models.loading import ModelBundle

        started = time.perf_counter()
        was_training = model.training
        states = _random_states()
        values: dict[str, float] = {}
        try:
            for evaluate_config, names in self.groups:
                if names:
                    ctx = EvalContext(
                        ModelBundle(model, tokenizer), self.sets, evaluate_config,
                        self.prompt or _default_prompt(), self.templates, self.reference,
                    )  # fmt: skip
                    values.update(run_metrics(ctx, names))
        finally:
            model.train(was_training)  # scoring and generation switch the model to eval mode
            _restore_random_states(states)
        values = {name: values[name] for name in self.config.metrics}  # in the order asked for
        point = {"step": int(step), "epoch": float(epoch), **values}
        self.points.append(point)
        if self.track:
            log_trajectory_metrics({**values, "epoch": float(epoch)}, int(step))
        shown = ", ".join(f"{name}={value:.4g}" for name, value in values.items())
        logger.info("trajectory at step %d (epoch %.2f), %.1f s: %s", step, epoch, time.perf_counter() - started, shown)
        return point

    def history(self) -> History:
        """`{"trajectory/<metric>": [{"step", "value"}, ...], "trajectory/epoch": [...]}`, the unlearning history's
        shape; non-finite values are left out, as in the training history."""
        history: History = {}
        for point in self.points:
            for name, value in point.items():
                if name != "step" and np.isfinite(value):
                    history.setdefault(f"{TRAJECTORY_PREFIX}/{name}", []).append(
                        {"step": int(point["step"]), "value": float(value)}
                    )
        return history

    def callback(self, tokenizer: Any) -> Any:
        """A Trainer callback that measures at the start (`at_start`), then at every epoch end or every `every`
        optimiser steps and at the last one; main process only (launched trainings are refused by the config)."""
        from transformers import TrainerCallback

        trajectory, every = self, self.config.every

        class TrajectoryCallback(TrainerCallback):
            last_step: int | None = None

            def _measure(self, state: Any, model: Any) -> None:
                if state.is_world_process_zero and state.global_step != self.last_step:
                    self.last_step = state.global_step
                    trajectory.measure(model, tokenizer, state.global_step, state.epoch or 0.0)

            def on_train_begin(self, args, state, control, model=None, **kwargs):
                if trajectory.config.at_start:  # after a resumed checkpoint is loaded: the curve continues from it
                    self._measure(state, model)

            def on_step_end(self, args, state, control, model=None, **kwargs):
                if every != EVERY_EPOCH and (state.global_step % every == 0 or state.global_step >= state.max_steps):
                    self._measure(state, model)

            def on_epoch_end(self, args, state, control, model=None, **kwargs):
                if every == EVERY_EPOCH:
                    self._measure(state, model)

        return TrajectoryCallback()


def _default_prompt() -> Any:
    from flat_pipeline.prompts import PromptFormat

    return PromptFormat()


def _random_states() -> dict[str, Any]:
    """Every random state the training may read (its own dropout, data order and template draws)."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_random_states(states: Mapping[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])
