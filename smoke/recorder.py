"""What every check module shares: the recorder of results and the run they belong to."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from service.messages import HealthStatus
from smoke.model import TITLES, CheckName, CheckResult, Evidence, Status, TlsFacts, Via
from smoke.target import Options, Target


class Recorder:
    """Collects results for one target, timing each check from its own start."""

    def __init__(self, via: Via) -> None:
        self.via = via
        self.results: list[CheckResult] = []

    def add(self, name: CheckName, status: Status, started: float, detail: str,
            evidence: Evidence | None = None, *,
            metrics: dict[str, float] | None = None) -> None:
        self.results.append(CheckResult(
            name=name, title=TITLES[name], status=status, via=self.via,
            duration_s=round(time.monotonic() - started, 3), detail=detail,
            evidence=msgspec.structs.replace(evidence) if evidence is not None else None,
            metrics=metrics or {},
        ))

    def skip(self, names: list[CheckName], why: str) -> None:
        now = time.monotonic()
        for name in names:
            self.add(name, "skip", now, why)


@dataclass
class Run:
    """One target's run as the check sessions see it: where, how, and what others found.

    ``health`` is the /ws/health greeting (None when there was none): the origin check needs
    its ``allowed_origins``; ``extend`` lets the heartbeat check widen the run's deadline once
    the server's ping interval is known.
    """

    target: Target
    options: Options
    rec: Recorder
    health: asyncio.Future[HealthStatus | None]
    extend: Callable[[float], None]
    tls: TlsFacts | None = None
    warnings: list[str] = field(default_factory=list)


def detail(message: str, evidence: Evidence) -> str:
    """``message`` plus the transport facts, unless the message already says them."""
    facts = evidence.summary()
    return f"{message} [{facts}]" if facts and facts not in message else message

