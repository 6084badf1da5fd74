"""Figures for reports; the percentile is smoke's (``smoke.stats``), re-exported here."""

from __future__ import annotations

import math

from smoke.stats import percentile

__all__ = ["or_none", "percentile"]


def or_none(value: float, digits: int = 1) -> float | None:
    """``value`` rounded for a JSON report, None (null) when it was not measured (NaN)."""
    return None if math.isnan(value) else round(value, digits)
