"""The one percentile of tests, benchmarks and the soak run (smoke/ ships its own)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 < q <= 100): a value that was measured, never interpolated.

    NaN for no values: a figure that was not measured. It fails every comparison, so no bound
    passes on it by accident (a 0.0 would), and the bench summaries leave NaNs out.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def or_none(value: float, digits: int = 1) -> float | None:
    """``value`` rounded for a JSON report, None (null) when it was not measured (NaN)."""
    return None if math.isnan(value) else round(value, digits)
