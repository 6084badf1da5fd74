"""A whole run: the suite against the target (and ``--direct``), concurrently, then diagnoses."""

from __future__ import annotations

import asyncio
import contextlib
import time

from service.codes import CloseCode
from service.messages import HealthStatus
from service.origin import origin_of
from smoke.checks.http import ask_after_drop
from smoke.diagnose import diagnose
from smoke.model import CheckResult, Report
from smoke.probe import Probe, ProbeError
from smoke.suite import TOOL_ERROR, Suite
from smoke.target import Options, Target

EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE = 0, 1, 2
_UNREACHABLE = frozenset({"refused", "dns", "connect_timeout", "network", "proxy"})


def _greeting(suite: Suite) -> HealthStatus | None:
    return suite.health.result() if suite.health.done() else None


async def _greeting_without_origin(target: Target, options: Options) -> HealthStatus | None:
    probe = Probe(target.ws("/ws/health"), "/ws/health", options, use_origin=False)
    try:
        await probe.open()
        greeting: HealthStatus = await probe.recv_until(
            HealthStatus, time.monotonic() + options.timeout)
    except ProbeError:
        return None
    finally:
        with contextlib.suppress(Exception):
            await probe.abort()
    return greeting


def _abnormal_close(result: CheckResult) -> bool:
    ev = result.evidence
    return (ev is not None and ev.close_code == CloseCode.ABNORMAL_CLOSURE
            and ev.closed_by == "network")


async def _recheck_after_drop(suite: Suite, results: list[CheckResult]) -> None:
    dropped = [r.evidence for r in results
               if r.via == suite.rec.via and _abnormal_close(r) and r.evidence is not None]
    if dropped:
        await ask_after_drop(suite.options, suite.target.http("/health"), dropped)


async def run_checks(target: Target, options: Options, direct: Target | None = None) -> Report:
    started_at, started = time.time(), time.monotonic()
    suites = [Suite(target, options)]
    if direct is not None:
        suites.append(Suite(direct, options, via="direct"))
    per_suite = await asyncio.gather(*(s.run() for s in suites))
    results: list[CheckResult] = [r for rs in per_suite for r in rs]
    await asyncio.gather(*(_recheck_after_drop(s, results) for s in suites))

    greeting = next((g for g in map(_greeting, suites) if g is not None), None)
    if greeting is None and any(r.evidence is not None and r.evidence.http_status == 403
                                for r in results):
        # Our Origin was refused everywhere: ask /ws/health without one, to name the list.
        greeting = await _greeting_without_origin(target, options)
    allowed = None
    if greeting is not None and greeting.environment is not None:
        # The service also accepts its own public origin (the /ws-check page's) unlisted.
        env = greeting.environment
        own = origin_of(env.public_base_url)
        allowed = env.allowed_origins + ([] if own in env.allowed_origins
                                         else [f"{own} (PUBLIC_BASE_URL)"])
    interval = (float(greeting.config.ping_interval)
                if greeting is not None and greeting.config is not None else None)
    diagnoses = diagnose(target, options, results, direct=direct, allowed_origins=allowed,
                         ping_interval=interval)

    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip")}
    handshake = next((r for r in results if r.name == "handshake" and r.via == "target"), None)
    unreachable = (handshake is not None and handshake.status == "fail"
                   and handshake.evidence is not None
                   and handshake.evidence.error in _UNREACHABLE)
    tool_error = any(r.name == TOOL_ERROR for r in results)
    exit_code = (EXIT_UNREACHABLE if unreachable or tool_error else
                 EXIT_FAILED if counts["fail"] else EXIT_OK)
    warnings = [w for s in suites for w in s.run_state.warnings]
    if options.insecure and not any("--insecure" in w for w in warnings):
        warnings.append("--insecure: certificates are NOT verified")
    return Report(
        tool="ws-smoke", target=target.ws_base, direct=direct.ws_base if direct else None,
        started_at=started_at, duration_s=round(time.monotonic() - started, 3),
        exit_code=exit_code, counts=counts, results=results, diagnoses=diagnoses,
        warnings=warnings, tls=suites[0].run_state.tls,
    )
