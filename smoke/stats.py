"""Summary statistics over measured samples."""

from __future__ import annotations

import math


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported value was measured)."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]
