"""Summary statistics over measured samples: the one percentile of smoke, tests, benchmarks
and the fleet (``testkit.stats`` re-exports it)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 < q <= 100): a value that was measured, never interpolated.

    NaN for no values: a figure that was not measured. It fails every comparison, so no bound
    passes on it by accident (a 0.0 would), and reports leave NaNs out.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
