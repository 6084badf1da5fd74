"""``/ws``: the application endpoint answers ``ping`` with ``pong`` and echoes ``custom``."""

from __future__ import annotations

import time

from service.messages import WsEcho, WsPong
from smoke.probe import Probe, ProbeError
from smoke.recorder import Run, detail


async def ws_session(run: Run) -> None:
    rec, opts = run.rec, run.options
    probe = Probe(run.target.ws("/ws"), "/ws", opts)
    started = time.monotonic()
    try:
        await probe.open()
        await probe.send({"type": "ping"})
        pong = await probe.recv_until(WsPong, time.monotonic() + opts.timeout)
    except ProbeError as exc:
        rec.add("ws_ping_pong", "fail", started, detail(str(exc), probe.evidence),
                probe.evidence)
        rec.skip(["ws_echo"], "skipped: /ws ping failed")
        await probe.abort()
        return
    rec.add("ws_ping_pong", "pass", started,
            f"pong in {1000 * (time.monotonic() - started):.0f} ms (incl. handshake), "
            f"client_id={pong.client_id}", probe.evidence)
    started = time.monotonic()
    try:
        _, echo = await probe.round_trip("custom", WsEcho, time.monotonic() + opts.timeout)
    except ProbeError as exc:
        rec.add("ws_echo", "fail", started, detail(str(exc), probe.evidence),
                probe.evidence)
    else:
        rec.add("ws_echo", "pass", started,
                f"data matches, server_processing_ms={echo.server_processing_ms:g}",
                probe.evidence)
    finally:
        await probe.abort()
