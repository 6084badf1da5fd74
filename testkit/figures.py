"""Figures of a reliability case: one ``RELIABILITY {json}`` line, also kept in reports/."""

from __future__ import annotations

import json
from typing import Any

from testkit.paths import REPO

FIGURES = REPO / "reports" / "reliability-figures.jsonl"


def report(case: str, **figures: Any) -> None:
    """Print one ``RELIABILITY {json}`` line of figures and append it to reports/ (gitignored)."""
    line = json.dumps({"case": case, **figures}, sort_keys=True)
    print(f"RELIABILITY {line}", flush=True)
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a") as out:
        out.write(line + "\n")
