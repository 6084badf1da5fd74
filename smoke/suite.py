"""One target's run: every check session concurrently, under one deadline, so a run lasts
about ``--sustain`` and a stuck step becomes a ``tool_error`` instead of a hang."""

from __future__ import annotations

import asyncio
import time

from service.messages import HealthStatus
from smoke.checks import sessions
from smoke.model import TITLES, CheckName, CheckResult, Via
from smoke.recorder import Recorder, Run
from smoke.target import Options, Target

ORDER: list[CheckName] = list(TITLES)
TOOL_ERROR: CheckName = "tool_error"


class Suite:
    """All checks against one target (the proxy, or with ``--direct`` also the backend)."""

    def __init__(self, target: Target, options: Options, via: Via = "target") -> None:
        self.target = target
        self.options = options
        self.rec = Recorder(via)
        self.health: asyncio.Future[HealthStatus | None] = (
            asyncio.get_running_loop().create_future()
        )
        self.run_state = Run(target, options, self.rec, self.health, self._extend_deadline)
        self.started = time.monotonic()
        self.deadline = self.started + self.budget()

    def expected_checks(self) -> list[CheckName]:
        return [n for n in ORDER if n != TOOL_ERROR
                and not (n == "sustained" and self.options.quick)
                and not (n == "tls" and not self.target.secure)]

    def budget(self, interval: float | None = None) -> float:
        """Seconds a run may take before it is a tool error: the longest legitimate path
        (heartbeat waits or --sustain, latency samples) plus a few step timeouts."""
        o = self.options
        t = o.timeout
        expected = o.heartbeat_interval or interval or 0.0
        beats = (1 if o.quick else 2) * (expected + o.grace)
        hold = beats if o.quick else max(beats, o.sustain)
        latency = t + o.latency_samples * o.latency_limit_ms / 1000
        return max(hold + 4 * t, 4 * t + latency) + 3 * t

    def _extend_deadline(self, interval: float) -> None:
        """The server's ping_interval is known: heartbeat waits may need more than at start."""
        self.deadline = max(self.deadline, self.started + self.budget(interval))

    async def run(self) -> list[CheckResult]:
        self.started = time.monotonic()
        self.deadline = self.started + self.budget()
        tasks: dict[asyncio.Future[None], str] = {
            asyncio.ensure_future(s(self.run_state)): s.__name__
            for s in sessions(self.target.secure)}
        pending: set[asyncio.Future[None]] = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=self.deadline - time.monotonic())
            if pending and time.monotonic() >= self.deadline:
                stuck = sorted(tasks[t] for t in pending)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                self.rec.add(TOOL_ERROR, "fail", self.started,
                             f"run deadline of {self.deadline - self.started:.0f}s exceeded "
                             f"(--sustain, heartbeat waits and a few --timeout); still "
                             f"running: {', '.join(stuck)}")
                break
        for task, name in tasks.items():
            if task.cancelled():
                continue
            error = task.exception()
            if error is not None:  # a bug in this tool, not in the target
                self.rec.add(TOOL_ERROR, "fail", self.started,
                             f"internal error in {name}: {error!r}")
        if not self.health.done():
            self.health.set_result(None)
        self._skip_missing()
        order = {name: i for i, name in enumerate(ORDER)}
        return sorted(self.rec.results, key=lambda r: order[r.name])

    def _skip_missing(self) -> None:
        """Checks a tool error or the deadline kept from reporting are shown as skipped."""
        done = {r.name for r in self.rec.results}
        missing = [n for n in self.expected_checks() if n not in done]
        if missing:
            errors = [r.detail for r in self.rec.results if r.name == TOOL_ERROR]
            why = errors[0] if errors else "no result recorded"
            self.rec.skip(missing, f"skipped: not completed ({why})")
