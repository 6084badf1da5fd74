"""``/ws/echo``: the handshake, the welcome, a faithful echo, round-trip latency and a clean
1000 close."""

from __future__ import annotations

import time

from service.codes import CloseCode
from service.messages import Echo, Welcome
from smoke.model import CheckName
from smoke.probe import Probe, ProbeError
from smoke.recorder import Run, detail
from smoke.stats import percentile
from smoke.tls import facts_from


async def echo_session(run: Run) -> None:
    rec, opts = run.rec, run.options
    rest: list[CheckName] = ["echo_welcome", "echo_roundtrip", "latency", "normal_close"]
    probe = Probe(run.target.ws("/ws/echo"), "/ws/echo", opts)
    started = time.monotonic()
    try:
        await probe.open()
    except ProbeError as exc:
        rec.add("handshake", "fail", started, detail(str(exc), probe.evidence),
                probe.evidence)
        rec.skip(rest, "skipped: no connection (see handshake)")
        return
    if run.target.secure and run.tls is None:  # through a proxy: the session we really used
        run.tls = facts_from(probe.ssl_object, verified=not opts.insecure)
    rec.add("handshake", "pass", started,
            f"101 Switching Protocols in {1000 * (time.monotonic() - started):.0f} ms",
            probe.evidence)
    try:
        await _echo_steps(run, probe)
    finally:
        await probe.abort()


async def _echo_steps(run: Run, probe: Probe) -> None:
    rec, opts = run.rec, run.options
    started = time.monotonic()
    try:
        welcome = await probe.recv_until(Welcome, started + opts.timeout)
    except ProbeError as exc:
        rec.add("echo_welcome", "fail", started, detail(f"no welcome: {exc}",
                probe.evidence), probe.evidence)
        rec.skip(["echo_roundtrip", "latency", "normal_close"], "skipped: no welcome")
        return
    if welcome.endpoint != "/ws/echo":
        rec.add("echo_welcome", "fail", started,
                f"welcome names endpoint {welcome.endpoint!r}, expected '/ws/echo'",
                probe.evidence)
    else:
        rec.add("echo_welcome", "pass", started,
                f"client_id={welcome.client_id} ping_interval="
                f"{welcome.config.ping_interval:g}s", probe.evidence)

    started = time.monotonic()
    try:
        sent, _ = await probe.round_trip("smoke_test", Echo, started + opts.timeout)
    except ProbeError as exc:
        mismatch = probe.evidence.error == "mismatch"  # the connection itself still works
        rec.add("echo_roundtrip", "fail", started,
                str(exc) if mismatch else detail(str(exc), probe.evidence), probe.evidence)
        if not mismatch:
            rec.skip(["latency", "normal_close"], "skipped: echo round-trip failed")
            return
    else:
        rec.add("echo_roundtrip", "pass", started,
                f"original matches ({len(sent)} bytes) in "
                f"{1000 * (time.monotonic() - started):.1f} ms", probe.evidence)

    if not await _latency(run, probe):
        return

    started = time.monotonic()
    try:
        await probe.close(1000, "ws-smoke done")
    except Exception as exc:  # any failure here is the finding
        rec.add("normal_close", "fail", started, f"close failed: {exc!r}", probe.evidence)
        return
    ev = probe.evidence
    ok = ev.close_code == CloseCode.NORMAL_CLOSURE
    rec.add("normal_close", "pass" if ok else "fail", started,
            "server answered our close with 1000" if ok else
            f"server answered our close with {ev.close_code}: {ev.summary()}", ev)


async def _latency(run: Run, probe: Probe) -> bool:
    """p50/p95/p99 over --latency-samples round trips; False when the connection is lost."""
    rec, opts = run.rec, run.options
    started = time.monotonic()
    samples: list[float] = []
    # One --timeout for the whole loop plus the limit per sample: round trips that would
    # all pass fit, and a crawling echo cannot stretch the run to samples x --timeout.
    phase_end = started + opts.timeout + opts.latency_samples * opts.latency_limit_ms / 1000
    try:
        for i in range(opts.latency_samples):
            t0 = time.perf_counter()
            await probe.send({"type": "smoke_latency", "seq": i})
            await probe.recv_until(Echo, min(phase_end, time.monotonic() + opts.timeout))
            samples.append(1000 * (time.perf_counter() - t0))
    except ProbeError as exc:
        rec.add("latency", "fail", started,
                detail(f"after {len(samples)} round trips: {exc}", probe.evidence),
                probe.evidence)
        rec.skip(["normal_close"], "skipped: connection lost")
        return False
    if samples:
        p50, p95, p99 = (percentile(samples, p) for p in (50, 95, 99))
        metrics = {"p50_ms": round(p50, 3), "p95_ms": round(p95, 3),
                   "p99_ms": round(p99, 3), "samples": float(len(samples))}
        ok = p95 < opts.latency_limit_ms
        rec.add("latency", "pass" if ok else "fail", started,
                f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms over {len(samples)} "
                f"round trips (p95 {'<' if ok else '>='} {opts.latency_limit_ms:g} ms)",
                probe.evidence, metrics=metrics)
    else:
        rec.add("latency", "skip", started, "skipped: --latency-samples 0")
    return True
