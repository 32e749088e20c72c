"""The one aggregate the metric modules share, kept below them and the context so that neither imports the other."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_of(values: Sequence[float]) -> float:
    """The mean of per-item values; NaN for no items (every item skipped, or an empty set)."""
    return float(np.mean(values)) if len(values) else float("nan")
