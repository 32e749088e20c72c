"""kedro-viz previews of the project's datasets: small tables of (name, value) rows.

kedro-viz shows what a dataset's `preview(**preview_args)` returns, typed by its return annotation
(`TablePreview`: a dict in pandas' "split" layout, `index` / `columns` / `data`); `preview_args` come from the
catalog entry's `metadata: kedro-viz: preview_args`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from kedro_datasets._typing import TablePreview


def cell(value: Any) -> Any:
    """A value as one table cell: a metric history (`[{"step": 5, "value": 0.3}, ...]`, training_history.json) by
    its last value, other lists and mappings by their size, non-finite floats as text (JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if (
        isinstance(value, list | tuple)
        and value
        and isinstance(value[-1], Mapping)
        and {"step", "value"} <= set(value[-1])
    ):
        return f"{cell(value[-1]['value'])} at step {value[-1]['step']} ({len(value)} values)"
    if isinstance(value, list | tuple):
        return f"[{len(value)} values]"
    if isinstance(value, Mapping):
        return f"{{{len(value)} entries}}"
    return value


def flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """`{"a": {"b": 1}, "c": [1, 2]}` -> `[("a.b", 1), ("c", [1, 2])]`: nested mappings by dotted name."""
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows


def table_preview(rows: Iterable[tuple[str, Any]], columns: tuple[str, str] = ("name", "value")) -> TablePreview:
    """Rows of (name, value) as kedro-viz's table preview."""
    data = [[name, cell(value)] for name, value in rows]
    return TablePreview({"index": list(range(len(data))), "columns": list(columns), "data": data})
