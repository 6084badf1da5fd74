"""The median (min-max) summary of interleaved rounds (percentiles: ``testkit.stats``)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

Summary = dict[str, float]


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
