"""The one selection rule every method is tuned by (`tune.rule`), and the Pareto front of its two metrics.

Default: maximise forget_quality subject to model_utility >= 0.9 x the original model's, ties to the higher
model_utility. The same rule, budget and floor apply to every method; `describe` prints it on the leaderboard.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass
from typing import Any

from flat_pipeline.config import ParameterError, check_choice, check_number

MODES = ("constrained", "pareto")
DIRECTIONS = ("maximize", "minimize")


@dataclass
class SelectionRule:
    """`tune.rule`: which trial of a method is its best.

    constrained: the best `objective` among trials whose `floor_metric` is at least `floor_fraction` x the original
    model's (a method with no such trial keeps the one nearest the floor, marked below it); ties go to the higher
    `tie_break`. pareto: every trial not beaten on both `objective` and `floor_metric` is kept (the front), and
    nothing is re-run with seeds. `log_objective`: the sampler sees log10 of the objective (forget_quality is a
    p-value across 30 orders of magnitude; the selection itself compares raw values, the same order).
    """

    mode: str = "constrained"
    objective: str = "forget_quality"
    direction: str = "maximize"
    floor_metric: str = "model_utility"
    floor_fraction: float = 0.9
    tie_break: str | None = "model_utility"  # higher wins
    log_objective: bool = True
    block: InitVar[str] = "tune.rule"

    def __post_init__(self, block: str) -> None:
        check_choice(f"{block}.mode", self.mode, MODES)
        check_choice(f"{block}.direction", self.direction, DIRECTIONS)
        check_number(f"{block}.floor_fraction", self.floor_fraction, minimum=0)
        for key in ("objective", "floor_metric"):
            if not isinstance(getattr(self, key), str):
                raise ParameterError(f"parameter {block}.{key}: expected a metric name, got {getattr(self, key)!r}")
        if not isinstance(self.log_objective, bool):
            raise ParameterError(f"parameter {block}.log_objective: expected true or false, got {self.log_objective!r}")

    @property
    def metrics(self) -> list[str]:
        """The metrics the rule reads (each trial must evaluate them)."""
        return list(dict.fromkeys(m for m in (self.objective, self.floor_metric, self.tie_break) if m))

    def floor(self, original: Mapping[str, float]) -> float:
        """The floor on `floor_metric`: `floor_fraction` x the original model's value."""
        if self.floor_metric not in original or not math.isfinite(original[self.floor_metric]):
            raise ValueError(
                f"parameter tune.rule.floor_metric: the original model's evaluation has no {self.floor_metric}; "
                f"evaluate it with that metric (kedro run --pipelines evaluate_original)"
            )
        return self.floor_fraction * original[self.floor_metric]

    def describe(self, original: Mapping[str, float] | None = None) -> str:
        floor = f" ({self.floor(original):.4g})" if original is not None else ""
        verb = "maximise" if self.direction == "maximize" else "minimise"
        if self.mode == "pareto":
            return f"Pareto front of {verb} {self.objective} and maximise {self.floor_metric}"
        ties = f"; ties to the higher {self.tie_break}" if self.tie_break else ""
        return (
            f"{verb} {self.objective} subject to {self.floor_metric} >= {self.floor_fraction:g} x the original "
            f"model's{floor}{ties}"
        )

    def sampler_value(self, metrics: Mapping[str, float]) -> float:
        """The number Optuna optimises for a trial (its direction is `direction`)."""
        value = metrics[self.objective]
        return math.log10(max(value, 1e-300)) if self.log_objective else value

    def feasible(self, metrics: Mapping[str, float], floor: float) -> bool:
        return metrics.get(self.floor_metric, -math.inf) >= floor

    def rank_key(self, metrics: Mapping[str, float], floor: float) -> tuple[float, ...]:
        """Sort key, smallest best: feasible first, then the objective, then the tie-break; below the floor, the
        nearest to it first."""
        sign = -1 if self.direction == "maximize" else 1
        objective = metrics.get(self.objective, math.nan)
        objective = math.inf if math.isnan(objective) else sign * objective
        tie = -metrics.get(self.tie_break, -math.inf) if self.tie_break else 0.0
        if self.feasible(metrics, floor):
            return (0.0, objective, tie)
        return (1.0, -metrics.get(self.floor_metric, -math.inf), objective)

    def best(self, trials: Sequence[Mapping[str, Any]], floor: float) -> Mapping[str, Any] | None:
        """The best of `trials` (each with `metrics`); None when there is none."""
        finished = [t for t in trials if t.get("metrics")]
        return min(finished, key=lambda t: self.rank_key(t["metrics"], floor), default=None)

    def pareto_front(self, trials: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The trials no other trial beats on both the objective and the floor metric, by the objective."""
        sign = 1 if self.direction == "maximize" else -1

        def point(trial: Mapping[str, Any]) -> tuple[float, float]:
            return sign * trial["metrics"][self.objective], trial["metrics"][self.floor_metric]

        finished = [t for t in trials if t.get("metrics")]
        front = [
            t
            for t in finished
            if not any(
                point(o)[0] >= point(t)[0] and point(o)[1] >= point(t)[1] and point(o) != point(t) for o in finished
            )
        ]
        return sorted(front, key=lambda t: -point(t)[0])

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> SelectionRule:
        from flat_pipeline.config import config_from_params

        return config_from_params(cls, params or {}, "tune.rule")
