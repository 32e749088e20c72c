"""Parameter blocks read into config dataclasses, and the checks every setting shares: one error type, messages that
name the parameter (`unlearn.learning_rate`), what was expected and what was given, and the nearest known name for a
typo."""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

ConfigT = TypeVar("ConfigT")


class ParameterError(ValueError):
    """A parameter is unknown or out of range; the message names it, what was expected and what was given."""


def nearest(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest known name, or an empty string when none is close."""
    match = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def unknown_keys(params: Mapping[str, Any], known: Iterable[str], block: str) -> list[str]:
    """One message per key of `params` that is not in `known`, with the nearest known name."""
    known = sorted(known)
    return [
        f"parameter {block}.{key}: unknown key{nearest(str(key), known)}; known: {', '.join(known)}"
        for key in sorted(set(params) - set(known), key=str)
    ]


def config_from_params(cls: type[ConfigT], params: Mapping[str, Any], block: str) -> ConfigT:
    """A config dataclass from a parameter block; an unknown key is an error that names it and the nearest known one.

    A class with a `block` init-only field gets the block's name too, for its own range checks' messages.
    """
    problems = unknown_keys(params, [f.name for f in fields(cls)], block)
    if problems:
        raise ParameterError("; ".join(problems))
    named = "block" in inspect.signature(cls).parameters
    return cls(**params, block=block) if named else cls(**params)


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    integer: bool = False,
    optional: bool = False,
) -> None:
    """Raise ParameterError unless `value` is a finite number (an integer when asked) within the given bounds.

    `minimum` / `maximum` are inclusive, `above` / `below` exclusive; `optional` lets None through.
    """
    if value is None and optional:
        return
    kind = "an integer" if integer else "a finite number"
    bounds = [
        f">= {minimum:g}" if minimum is not None else "",
        f"> {above:g}" if above is not None else "",
        f"<= {maximum:g}" if maximum is not None else "",
        f"< {below:g}" if below is not None else "",
    ]
    expected = " ".join([kind, " and ".join(b for b in bounds if b)]).strip() + (" or null" if optional else "")
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    ok = (
        numeric
        and math.isfinite(value)
        and (not integer or float(value).is_integer())
        and (minimum is None or value >= minimum)
        and (above is None or value > above)
        and (maximum is None or value <= maximum)
        and (below is None or value < below)
    )
    if not ok:
        raise ParameterError(f"parameter {name}: expected {expected}, got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ParameterError unless `value` is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        hint = nearest(value, map(str, choices)) if isinstance(value, str) else ""
        raise ParameterError(f"parameter {name}: expected one of {', '.join(map(str, choices))}, got {value!r}{hint}")
