"""Percentiles and the median (min-max) summary of interleaved rounds."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

Summary = dict[str, float]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarize(samples: Sequence[float]) -> Summary:
    """Median, min and max of one metric over rounds (NaNs left out)."""
    clean = [s for s in samples if s == s]  # noqa: PLR0124 - NaN check
    if not clean:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean),
            "n": len(clean)}


def ratio(peer: float, ours: float) -> float:
    """peer / ours; NaN where either is missing or ours is zero."""
    if ours == 0 or ours != ours or peer != peer:  # noqa: PLR0124 - NaN checks
        return float("nan")
    return peer / ours
