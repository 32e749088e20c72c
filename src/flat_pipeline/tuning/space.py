"""Search spaces: what a tune trial draws for a method (learning rate on a log scale, epochs, the method's own
settings), declared in `tune.space` (conf/base/parameters_tune.yml).

`tune.space.shared` holds the dimensions every method draws (the same ranges for all, so no method gets a wider
search than another); `tune.space.methods.<name>` adds that method's own (NPO's beta, RMU's layer, FLAT's score).
A dimension is `{low, high}` (integers when both are integers), `{low, high, log: true}` or `{choices: [...]}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flat_pipeline.config import ParameterError, check_number, nearest


@dataclass(frozen=True)
class Dimension:
    """One setting a trial draws: a float or int range (log scale or not), or a list of choices."""

    name: str  # an `unlearn` setting: learning_rate, num_train_epochs, beta, ...
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    @classmethod
    def from_params(cls, name: str, spec: Any, parameter: str) -> Dimension:
        """From `{low, high[, log]}` or `{choices: [...]}`; `parameter` names it in messages."""
        if not isinstance(spec, Mapping):
            raise ParameterError(
                f"parameter {parameter}: expected {{low, high[, log]}} or {{choices: [...]}}, got {spec!r}"
            )
        keys = set(spec)
        if keys == {"choices"}:
            choices = spec["choices"]
            if not isinstance(choices, list | tuple) or not choices:
                raise ParameterError(f"parameter {parameter}.choices: expected a non-empty list, got {choices!r}")
            return cls(name, choices=tuple(choices))
        if not {"low", "high"} <= keys or keys - {"low", "high", "log"}:
            extra = sorted(keys - {"low", "high", "log", "choices"})
            hint = f"unknown key '{extra[0]}'{nearest(extra[0], ['low', 'high', 'log', 'choices'])}; " if extra else ""
            raise ParameterError(
                f"parameter {parameter}: {hint}expected {{low, high[, log]}} or {{choices: [...]}}, got {dict(spec)!r}"
            )
        low, high, log = spec["low"], spec["high"], spec.get("log", False)
        check_number(f"{parameter}.low", low, above=0 if log else None)
        check_number(f"{parameter}.high", high, minimum=low)
        if not isinstance(log, bool):
            raise ParameterError(f"parameter {parameter}.log: expected true or false, got {log!r}")
        return cls(name, low=low, high=high, log=log)

    @property
    def is_int(self) -> bool:
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)

    def suggest(self, trial: Any) -> Any:
        """Draw this setting for an Optuna trial."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.is_int:
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def corners(self) -> list[Any]:
        """The values checked before any trial runs: both ends of a range, every choice."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


def method_space(space: Mapping[str, Any], method: str, settings: set[str]) -> dict[str, Dimension]:
    """The dimensions `method` draws: `tune.space.shared`, then `tune.space.methods.<method>` (which may narrow a
    shared one). `settings`: the names an `unlearn` block accepts; another name is an error naming the nearest."""
    unknown_blocks = sorted(set(space) - {"shared", "methods"})
    if unknown_blocks:
        name = unknown_blocks[0]
        raise ParameterError(
            f"parameter tune.space.{name}: unknown key{nearest(name, ['shared', 'methods'])}; known: methods, shared"
        )
    blocks = [("tune.space.shared", space.get("shared") or {}),
              (f"tune.space.methods.{method}", (space.get("methods") or {}).get(method) or {})]  # fmt: skip
    dimensions: dict[str, Dimension] = {}
    for block, entries in blocks:
        if not isinstance(entries, Mapping):
            raise ParameterError(
                f"parameter {block}: expected a mapping of unlearn settings to ranges, got {entries!r}"
            )
        for name, spec in entries.items():
            if name not in settings or name in ("method", "seed"):
                why = "the method is the study's, the seed the seeds'" if name in ("method", "seed") else "unknown"
                raise ParameterError(
                    f"parameter {block}.{name}: not a setting a trial can draw ({why}){nearest(name, settings)}"
                )
            dimensions[name] = Dimension.from_params(name, spec, f"{block}.{name}")
    return dimensions


def corner_settings(dimensions: Mapping[str, Dimension]) -> list[dict[str, Any]]:
    """Settings that between them reach every end of every range and every choice: all lows, all highs, and each
    choice with the others at their low end. Checked against the method's config before any training."""
    if not dimensions:
        return [{}]
    lows = {name: dim.corners()[0] for name, dim in dimensions.items()}
    corners = [lows, {name: dim.corners()[-1] for name, dim in dimensions.items()}]
    for name, dim in dimensions.items():
        corners += [{**lows, name: value} for value in dim.corners()[1:-1]]
    return corners
