"""The origin policy: a foreign ``Origin`` must get 403 unless ``ALLOWED_ORIGINS`` is ``*``."""

from __future__ import annotations

import time

from smoke.probe import Probe, ProbeError
from smoke.recorder import Run, detail


async def origin_session(run: Run) -> None:
    rec, opts = run.rec, run.options
    greeting = await run.health
    started = time.monotonic()
    if greeting is None or greeting.environment is None:
        rec.add("origin_policy", "skip", started,
                "skipped: allowed_origins unknown (no health_status)")
        return
    allowed = greeting.environment.allowed_origins
    foreign = opts.foreign_origin
    probe = Probe(run.target.ws("/ws/health"), "/ws/health", opts, origin=foreign,
                  use_origin=False)
    try:
        await probe.open()
    except ProbeError as exc:
        ev = probe.evidence
        if ev.http_status == 403:
            rec.add("origin_policy", "pass", started,
                    f"Origin {foreign} refused with HTTP 403 (allowed: {', '.join(allowed)})",
                    ev)
        else:
            rec.add("origin_policy", "fail", started,
                    detail(f"Origin {foreign}: expected HTTP 403, got: {exc}", ev), ev)
        return
    await probe.abort()
    ev = probe.evidence
    if "*" in allowed:
        rec.add("origin_policy", "pass", started,
                f"Origin {foreign} accepted: ALLOWED_ORIGINS is * (any site may connect)",
                ev)
    else:
        ev.error = "mismatch"
        rec.add("origin_policy", "fail", started,
                f"Origin {foreign} was accepted (101) although allowed_origins is "
                f"{', '.join(allowed)}", ev)
