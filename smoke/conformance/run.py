"""A conformance run: find how the endpoint echoes, then every case on its own connection."""

from __future__ import annotations

import asyncio
import json
import os
import time

from smoke.conformance.cases import CLIENT_CLOSE_DELAY, Case, Context
from smoke.conformance.client import ClientSettings, Connection, Endpoint, HandshakeError
from smoke.conformance.frames import TEXT
from smoke.conformance.model import (
    VERDICTS,
    CaseResult,
    ConformanceReport,
    EchoMode,
    Observed,
)

EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE = 0, 1, 2  # as smoke.runner
_MAX_FRAMES_SHOWN = 24


class Unreachable(Exception):
    """The first connection failed: no case can run (exit 2, as the checks' unreachable)."""


async def detect_echo(endpoint: Endpoint, settings: ClientSettings
                      ) -> tuple[EchoMode | None, str | None]:
    """Send one JSON text message: an identical reply means a raw echo, a JSON reply that
    contains it a JSON echo (this service's ``/ws/echo`` wraps it in ``original``). None when
    nothing echoed it within the timeout. Also returns the handshake's Server header."""
    try:
        conn = await Connection.open(endpoint, settings)
    except HandshakeError as exc:
        raise Unreachable(str(exc)) from None
    obj = {"type": "conformance", "id": os.urandom(6).hex(), "data": "probe"}
    payload = json.dumps(obj, separators=(",", ":")).encode()
    mode: EchoMode | None = None

    def decide() -> bool:
        nonlocal mode
        for m in conn.record.messages:
            if m.opcode != TEXT:
                continue
            if m.payload == payload:
                mode = "raw"
                return True
            if obj["id"].encode() in m.payload:
                mode = "json"
                return True
        return False

    try:
        conn.send(TEXT, payload)
        await conn.wait(lambda: decide() or conn.record.close_received)
    finally:
        await conn.finish()
    return mode, conn.headers.get("server")


def _observed(conn: Connection | None, handshake_status: int | None) -> Observed:
    if conn is None:
        return Observed(handshake_status=handshake_status)
    rec = conn.record
    start = conn.mark_at if conn.mark_at is not None else conn.sent_at
    frames = rec.frames if len(rec.frames) <= _MAX_FRAMES_SHOWN else [
        *rec.frames[:_MAX_FRAMES_SHOWN - 2], f"... {len(rec.frames) - _MAX_FRAMES_SHOWN + 1} more",
        rec.frames[-1]]
    server_first = rec.close_received and (
        conn.client_close_at is None or (rec.close_at or 0) < conn.client_close_at)
    return Observed(
        handshake_status=conn.status,
        extensions=conn.headers.get("sec-websocket-extensions"),
        frames=list(frames),
        close_code=rec.close_code if rec.close_received else None,
        close_reason=(rec.close_reason.decode(errors="replace") or None
                      if rec.close_reason else None),
        tcp=conn.ended or "open",
        close_ms=(round((rec.close_at - start) * 1000, 1)
                  if rec.close_at is not None else None),
        tcp_end_ms=(round((conn.end_at - start) * 1000, 1)
                    if conn.end_at is not None else None),
        closed_before_client_close=(
            (conn.end_at is not None and (conn.client_close_at is None
                                          or conn.end_at < conn.client_close_at))
            if server_first else None),
    )


async def run_case(case: Case, ctx: Context) -> CaseResult:
    """One case, bounded: its waits have the timeout each, the whole case a few of them."""
    started = time.monotonic()
    budget = 4 * ctx.timeout + 2 * CLIENT_CLOSE_DELAY
    status: int | None = None
    try:
        verdict, detail = await asyncio.wait_for(case.run(ctx), budget)
    except HandshakeError as exc:
        verdict, detail, status = "fail", f"no WebSocket: {exc}", exc.status
    except TimeoutError:
        verdict, detail = "fail", f"the case did not finish within {budget:g}s"
    conn = ctx.connections[-1] if ctx.connections else None
    violations = [v for c in ctx.connections for v in c.record.violations]
    if violations and verdict != "fail":
        verdict, detail = "fail", f"the server broke the protocol: {'; '.join(violations)}"
    elif violations:
        detail += f"; the server broke the protocol: {'; '.join(violations)}"
    observed = _observed(conn, status)  # before the clean-up close, which is not the case's
    for c in ctx.connections:
        await c.finish()
    return CaseResult(
        id=case.id, category=case.category, title=case.title, rfc=case.rfc,
        expected=case.expected, verdict=verdict, detail=detail,
        duration_s=round(time.monotonic() - started, 3), observed=observed,
    )


async def run_conformance(endpoint: Endpoint, settings: ClientSettings, cases: list[Case], *,
                          echo: EchoMode | None = None, oversize: int = (1 << 20) + 1
                          ) -> ConformanceReport:
    """Every case in order, one connection each (so one failure cannot spoil the next)."""
    started_at, started = time.time(), time.monotonic()
    warnings: list[str] = []
    detected, server = await detect_echo(endpoint, settings)
    mode: EchoMode
    if echo is not None:
        mode = echo
        if detected is not None and detected != echo:
            warnings.append(f"--echo {echo}, but the endpoint's echo looks {detected}")
    elif detected is None:
        mode = "raw"
        warnings.append("the endpoint did not echo a probe message within the timeout: echo "
                        "cases fail; point the URL at an echo endpoint")
    else:
        mode = detected
    results: list[CaseResult] = []
    for case in cases:
        ctx = Context(endpoint=endpoint, settings=settings, echo=mode, oversize=oversize)
        results.append(await run_case(case, ctx))
    counts: dict[str, int] = {v: sum(r.verdict == v for r in results) for v in VERDICTS}
    return ConformanceReport(
        tool="ws-smoke conformance", target=endpoint.url, echo=mode,
        echo_detected=echo is None and detected is not None, server_header=server,
        started_at=started_at, duration_s=round(time.monotonic() - started, 3),
        exit_code=EXIT_FAILED if counts["fail"] else EXIT_OK, counts=counts,
        results=results, warnings=warnings,
    )
