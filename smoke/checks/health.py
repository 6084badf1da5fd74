"""``/ws/health``: the greeting, the exposed config, the public URLs a browser would use,
heartbeats within the interval, and a connection that survives ``--sustain`` (past a
proxy's idle timeout)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from service.codes import CloseCode
from service.messages import HealthStatus, Heartbeat
from smoke.browser import mixed_content
from smoke.model import CheckName
from smoke.probe import Probe, ProbeError
from smoke.recorder import Run, detail


@dataclass
class _Beats:
    """Heartbeats seen on the /ws/health connection, shared by the heartbeat and sustain
    phases."""

    opened: float
    last_at: float
    last_number: int = 0
    gaps: list[float] = field(default_factory=list)
    number_error: str | None = None

    def seen(self, heartbeat: Heartbeat) -> None:
        now = time.monotonic()
        self.gaps.append(now - self.last_at)
        if heartbeat.ping_number != self.last_number + 1 and self.number_error is None:
            self.number_error = (f"ping_number went {self.last_number} -> "
                                 f"{heartbeat.ping_number}, expected {self.last_number + 1}")
        self.last_at, self.last_number = now, heartbeat.ping_number

    async def next(self, probe: Probe, until: float) -> None:
        """Wait for the next message until ``until``; a heartbeat is counted and answered
        (a close racing the pong raises ProbeError like a close while waiting)."""
        message = await probe.recv(max(0.0, until - time.monotonic()))
        if isinstance(message, Heartbeat):
            self.seen(message)
            await probe.answer(message)


# -- /ws/health ----------------------------------------------------------------------------


async def health_session(run: Run) -> None:
    try:
        await _health_session(run)
    finally:  # origin_session waits on this whatever happened here
        if not run.health.done():
            run.health.set_result(None)


async def _health_session(run: Run) -> None:
    rec, opts = run.rec, run.options
    later: list[CheckName] = ["config", "mixed_content", "heartbeat"]
    if not opts.quick:
        later.append("sustained")
    probe = Probe(run.target.ws("/ws/health"), "/ws/health", opts)
    started = time.monotonic()
    try:
        await probe.open()
        greeting = await probe.recv_until(HealthStatus, started + opts.timeout)
    except ProbeError as exc:
        run.health.set_result(None)
        rec.add("health_status", "fail", started, detail(str(exc), probe.evidence),
                probe.evidence)
        rec.skip(later, "skipped: no health_status")
        await probe.abort()
        return
    run.health.set_result(greeting)
    if greeting.config is not None:
        run.extend(float(greeting.config.ping_interval))
    try:
        await _health_steps(run, probe, greeting, started)
    finally:
        await probe.abort()


async def _health_steps(run: Run, probe: Probe, greeting: HealthStatus, started: float) -> None:
    rec = run.rec
    ok = greeting.status == "connected" and greeting.config is not None
    rec.add("health_status", "pass" if ok else "fail", started,
            f"status={greeting.status} client_id={greeting.client_id}"
            + ("" if greeting.config else " (no config)"), probe.evidence)

    now = time.monotonic()
    config = greeting.config
    interval: float | None = None
    if config is None:
        rec.add("config", "fail", now, "health_status has no config (ping_interval, "
                "ping_timeout)", probe.evidence)
    else:
        interval = float(config.ping_interval)
        timeout = float(config.ping_timeout)
        sane = interval > 0 and 0 < timeout < interval
        note = (" - note: at or above nginx's default 60 s proxy_read_timeout"
                if interval >= 60 else "")
        rec.add("config", "pass" if sane else "fail", now,
                f"ping_interval={interval:g}s ping_timeout={timeout:g}s"
                + ("" if sane else " (need 0 < ping_timeout < ping_interval)") + note,
                probe.evidence,
                metrics={"ping_interval_s": interval, "ping_timeout_s": timeout})

    now = time.monotonic()
    env = greeting.environment
    if env is None:
        rec.add("mixed_content", "skip", now, "skipped: health_status has no environment")
    else:
        page_url, page = ((run.target.http_base, f"the checked URL {run.target.ws_base}")
                          if run.target.secure else
                          (env.public_base_url, f"public_base_url {env.public_base_url}"))
        status, detail = mixed_content(env.ws_public_url, page_url, page) or (
            "pass", f"ws_public_url={env.ws_public_url} public_base_url={env.public_base_url}")
        rec.add("mixed_content", status, now, detail, probe.evidence)

    beats = _Beats(opened=started, last_at=started)
    lost = await _heartbeat_phase(run, probe, interval, beats)
    if run.options.quick:
        return
    if lost is not None:
        _sustain_failed(run, probe, beats, lost)
        return
    await _sustain_phase(run, probe, beats)


async def _heartbeat_phase(run: Run, probe: Probe, server_interval: float | None,
                           beats: _Beats) -> ProbeError | None:
    """Heartbeat delivery: one heartbeat (two in a full run) within interval + grace.

    Returns the error when the connection was lost (a late heartbeat leaves it usable).
    """
    rec, opts = run.rec, run.options
    started = time.monotonic()
    expected = opts.heartbeat_interval or server_interval
    if expected is None:
        rec.add("heartbeat", "skip", started, "skipped: interval unknown (no config); "
                "pass --heartbeat-interval")
        return None
    wanted = 1 if opts.quick else 2
    ev = probe.evidence
    while ev.heartbeats_received < wanted:
        try:
            await beats.next(probe, beats.last_at + expected + opts.grace)
        except ProbeError as exc:
            timed_out = ev.error == "timeout"
            if timed_out:  # the connection is fine; only the wait ended
                ev.error = ev.error_detail = None
            what = ("no heartbeat" if beats.last_number == 0 else
                    f"no heartbeat after #{beats.last_number}")
            msg = (f"{what} within {expected:g}s interval + {opts.grace:g}s grace "
                   f"(waited {time.monotonic() - beats.last_at:.2f}s)" if timed_out else
                   f"{what}: {exc}")
            rec.add("heartbeat", "fail", started, detail(msg, ev), ev,
                    metrics={"expected_interval_s": expected, "grace_s": opts.grace,
                             "server_interval_s": server_interval or 0.0})
            return None if timed_out else exc
    rec.add("heartbeat", "fail" if beats.number_error else "pass", started,
            beats.number_error or
            f"{ev.heartbeats_received} heartbeat(s), ping_number 1..{beats.last_number}, "
            f"max gap {max(beats.gaps):.2f}s (limit {expected + opts.grace:g}s)",
            ev, metrics={"max_gap_s": round(max(beats.gaps), 3)})
    return None


async def _sustain_phase(run: Run, probe: Probe, beats: _Beats) -> None:
    """Sustained: still connected --sustain seconds after opening, heartbeats answered."""
    until = beats.opened + run.options.sustain
    ev = probe.evidence
    while time.monotonic() < until:
        try:
            await beats.next(probe, until)
        except ProbeError as exc:
            if ev.error != "timeout":
                _sustain_failed(run, probe, beats, exc)
                return
            ev.error = ev.error_detail = None  # the window ended quietly
            break
    await _sustained_end(run, probe, beats)


def _sustain_failed(run: Run, probe: Probe, beats: _Beats, exc: ProbeError) -> None:
    ev, sustain = probe.evidence, run.options.sustain
    if ev.close_code is not None:
        text = (f"dropped after {ev.age_at_close_s or 0:.2f}s of {sustain:g}s, "
                f"{ev.heartbeats_received} heartbeats received")
    else:
        text = f"after {probe.age:.2f}s of {sustain:g}s: {exc}"
    run.rec.add("sustained", "fail", beats.opened, detail(text, ev), ev,
                 metrics={"age_s": ev.age_at_close_s or round(probe.age, 3)})


async def _sustained_end(run: Run, probe: Probe, beats: _Beats) -> None:
    rec, opts = run.rec, run.options
    opened, number_error, gaps = beats.opened, beats.number_error, beats.gaps
    # Sustained: still connected after --sustain; ask for live metrics, then close 1000.
    ev = probe.evidence
    try:
        await probe.send({"type": "get_status"})
        status_msg = await probe.recv_until(HealthStatus, time.monotonic() + opts.timeout)
        await probe.close(1000, "ws-smoke done")
    except ProbeError as exc:
        rec.add("sustained", "fail", opened, detail(f"after {opts.sustain:g}s: {exc}", ev),
                ev)
        return
    problems = [number_error] if number_error else []
    if ev.close_code != CloseCode.NORMAL_CLOSURE:
        problems.append(f"close answered with {ev.close_code}")
    summary = (f"connected {ev.age_at_close_s or 0:.1f}s, {ev.heartbeats_received} "
              f"heartbeats (server ping_count={status_msg.ping_count}), max gap "
              f"{max(gaps) if gaps else 0:.2f}s, closed 1000")
    rec.add("sustained", "fail" if problems else "pass", opened,
            "; ".join(problems) if problems else summary, ev,
            metrics={"heartbeats": float(ev.heartbeats_received),
             "age_s": ev.age_at_close_s or 0.0})
