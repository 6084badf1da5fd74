"""The checks: the seed's success criteria, run concurrently so a run lasts about ``--sustain``.

Each session coroutine owns one connection and yields several named, timed results; a step
that cannot run because an earlier one failed is reported as ``skip`` with the reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import re
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import msgspec

from service.codes import CloseCode
from service.messages import (
    Echo,
    HealthResponse,
    HealthStatus,
    Heartbeat,
    Welcome,
    WsEcho,
    WsPong,
)
from smoke.model import CheckResult, Evidence, Status, Via
from smoke.probe import Probe, ProbeError
from smoke.target import Options, Target

TITLES: dict[str, str] = {
    "http_health": "HTTP GET /health",
    "handshake": "Connection establishment (101)",
    "echo_welcome": "Welcome message on /ws/echo",
    "echo_roundtrip": "Echo round-trip",
    "latency": "Latency (round trips on /ws/echo)",
    "normal_close": "Normal closure 1000",
    "ws_ping_pong": "/ws ping -> pong",
    "ws_echo": "/ws echo",
    "health_status": "health_status on /ws/health",
    "config": "Config exposure",
    "mixed_content": "Public URL scheme (mixed content)",
    "heartbeat": "Heartbeat delivery",
    "sustained": "Sustained connection",
    "origin_policy": "Origin policy (foreign Origin refused)",
    "tool_error": "ws-smoke itself (a bug or a stuck step in this tool, not the target)",
}
ORDER = list(TITLES)
TOOL_ERROR = "tool_error"
_health_decoder = msgspec.json.Decoder(HealthResponse)


class Recorder:
    """Collects results for one target, timing each check from its own start."""

    def __init__(self, via: Via) -> None:
        self.via = via
        self.results: list[CheckResult] = []

    def add(self, name: str, status: Status, started: float, detail: str,
            evidence: Evidence | None = None, *,
            metrics: dict[str, float] | None = None) -> None:
        self.results.append(CheckResult(
            name=name, title=TITLES[name], status=status, via=self.via,
            duration_s=round(time.monotonic() - started, 3), detail=detail,
            evidence=msgspec.structs.replace(evidence) if evidence is not None else None,
            metrics=metrics or {},
        ))

    def skip(self, names: list[str], why: str) -> None:
        now = time.monotonic()
        for name in names:
            self.add(name, "skip", now, why)


def _detail(message: str, evidence: Evidence) -> str:
    facts = evidence.summary()
    return f"{message} [{facts}]" if facts and facts not in message else message


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported value was measured)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


_IPV4_PART = {16: re.compile(r"[0-9a-fA-F]*"), 8: re.compile(r"[0-7]*"), 10: re.compile(r"[0-9]+")}


def _whatwg_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``host`` read as the WHATWG URL parser reads an IPv4 host (``127.1``, ``0x7f.0.0.1``,
    ``2130706433`` all mean 127.0.0.1 to a browser); None when it is not one."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if len(parts) > 4:
        return None
    numbers: list[int] = []
    for part in parts:
        digits, base = part, 10
        if part[:2] in ("0x", "0X"):
            digits, base = part[2:], 16
        elif len(part) > 1 and part.startswith("0"):
            digits, base = part[1:], 8
        if not part or not _IPV4_PART[base].fullmatch(digits):
            return None
        numbers.append(int(digits, base) if digits else 0)
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        return None
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def loopback_host(url: str) -> str | None:
    """The host of ``url`` when browsers count it as loopback, else None.

    Loopback is a potentially trustworthy origin (W3C Secure Contexts, "Is origin potentially
    trustworthy?", which the Mixed Content spec defers to): ``localhost`` and ``*.localhost``
    (a trailing dot allowed), 127.0.0.0/8 in any IPv4 form a browser's URL parser accepts, and
    ``[::1]``. Not ``0.0.0.0`` nor ``[::ffff:127.0.0.1]``: Chromium 156 lets an https page
    open those but warns that it is mixed content ("Insecure access is deprecated").
    """
    host = (urlsplit(url).hostname or "").lower()
    name = host[:-1] if host.endswith(".") else host
    if name == "localhost" or name.endswith(".localhost"):
        return host
    if ":" in host:
        try:
            return host if ipaddress.IPv6Address(host) == ipaddress.IPv6Address("::1") else None
        except ValueError:
            return None
    ipv4 = _whatwg_ipv4(host) if host else None
    return host if ipv4 is not None and ipv4.is_loopback else None


def mixed_content(ws_url: str, page_url: str, page: str) -> tuple[Status, str] | None:
    """Would a browser showing ``page_url`` refuse to open ``ws_url``? As browsers judge it:
    ws:// from an https page is blocked unless its host is loopback (see ``loopback_host``).
    None when there is nothing to judge (the page is not https, or the URL is wss://);
    ``page`` names the page in the detail."""
    if not page_url.startswith(("https://", "wss://")) or not ws_url.startswith("ws://"):
        return None
    clash = f"ws_public_url={ws_url} is ws:// while {page} is https"
    host = loopback_host(ws_url)
    if host is None:
        return "fail", clash
    return "pass", (f"{clash}, but {host} is loopback: browsers treat loopback as potentially "
                    "trustworthy (W3C Secure Contexts), so an https page may open it")


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


class Suite:
    """All checks against one target (the proxy, or with ``--direct`` also the backend)."""

    def __init__(self, target: Target, options: Options, via: Via = "target") -> None:
        self.target = target
        self.options = options
        self.rec = Recorder(via)
        self.health: asyncio.Future[HealthStatus | None] = (
            asyncio.get_running_loop().create_future()
        )
        self.started = time.monotonic()
        self.deadline = self.started + self.budget()

    def expected_checks(self) -> list[str]:
        return [n for n in ORDER if n != TOOL_ERROR and not (n == "sustained"
                                                             and self.options.quick)]

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
        sessions: list[Callable[[], Awaitable[None]]] = [
            self.http_health, self.echo_session, self.ws_session, self.health_session,
            self.origin_session,
        ]
        self.started = time.monotonic()
        self.deadline = self.started + self.budget()
        tasks: dict[asyncio.Future[None], str] = {
            asyncio.ensure_future(s()): s.__name__ for s in sessions}
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

    # -- HTTP ----------------------------------------------------------------------------------

    async def http_health(self) -> None:
        started = time.monotonic()
        url = self.target.http("/health")
        evidence = Evidence(url=url)
        status, detail = await asyncio.to_thread(self.get_health, url, evidence)
        self.rec.add("http_health", status, started, detail, evidence)

    def _opener(self, url: str, evidence: Evidence) -> urllib.request.OpenerDirector:
        """urllib reads http_proxy & co. by default: only with --use-env-proxy."""
        if not self.options.use_env_proxy:
            return urllib.request.build_opener(urllib.request.ProxyHandler({}))
        parts = urlsplit(url)
        if not urllib.request.proxy_bypass(parts.netloc):
            evidence.proxy = urllib.request.getproxies().get(parts.scheme)
        return urllib.request.build_opener(urllib.request.ProxyHandler())

    def get_health(self, url: str, evidence: Evidence) -> tuple[Status, str]:
        request = urllib.request.Request(url, headers=dict(self.options.headers))  # noqa: S310
        try:
            with self._opener(url, evidence).open(request, timeout=self.options.timeout) as (
                response
            ):
                body = response.read()
                evidence.http_status = response.status
                evidence.server_header = response.headers.get("Server")
        except urllib.error.HTTPError as exc:
            evidence.http_status = exc.code
            evidence.server_header = exc.headers.get("Server")
            evidence.error = "http_status"
            evidence.error_detail = f"HTTP {exc.code} {exc.reason}"
            return "fail", f"GET {url}: HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if evidence.proxy:  # whatever failed, it failed through the proxy
                evidence.error = "proxy"
                evidence.error_detail = f"proxy {evidence.proxy} failed: {reason}"
                return "fail", f"GET {url} via proxy {evidence.proxy}: {reason}"
            refused = isinstance(reason, ConnectionRefusedError)
            evidence.error = "refused" if refused else "network"
            evidence.error_detail = str(reason)
            return "fail", f"GET {url}: {'connection refused' if refused else reason}"
        except Exception as exc:  # recorded, so the run still ends with a report
            evidence.error = "client_error"
            evidence.error_detail = repr(exc)
            return "fail", f"GET {url}: unexpected error {exc!r}"
        try:
            health = _health_decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            evidence.error = "unexpected_message"
            evidence.error_detail = str(exc)
            return "fail", f"GET {url}: HTTP 200 but not the service's /health body ({exc})"
        return "pass", (
            f"HTTP 200 status={health.status} connections={health.connections} "
            f"ping_interval={health.config.ping_interval:g}s"
        )

    # -- /ws/echo ------------------------------------------------------------------------------

    async def echo_session(self) -> None:
        rec, opts = self.rec, self.options
        rest = ["echo_welcome", "echo_roundtrip", "latency", "normal_close"]
        probe = Probe(self.target.ws("/ws/echo"), "/ws/echo", opts)
        started = time.monotonic()
        try:
            await probe.open()
        except ProbeError as exc:
            rec.add("handshake", "fail", started, _detail(str(exc), probe.evidence),
                    probe.evidence)
            rec.skip(rest, "skipped: no connection (see handshake)")
            return
        rec.add("handshake", "pass", started,
                f"101 Switching Protocols in {1000 * (time.monotonic() - started):.0f} ms",
                probe.evidence)
        try:
            await self._echo_steps(probe)
        finally:
            await probe.abort()

    async def _echo_steps(self, probe: Probe) -> None:
        rec, opts = self.rec, self.options
        started = time.monotonic()
        try:
            welcome = await probe.recv_until(Welcome, started + opts.timeout)
        except ProbeError as exc:
            rec.add("echo_welcome", "fail", started, _detail(f"no welcome: {exc}",
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
        nonce = secrets.token_hex(8)
        try:
            sent = await probe.send({"type": "smoke_test", "data": nonce})
            echo = await probe.recv_until(Echo, started + opts.timeout)
        except ProbeError as exc:
            rec.add("echo_roundtrip", "fail", started, _detail(str(exc), probe.evidence),
                    probe.evidence)
            rec.skip(["latency", "normal_close"], "skipped: echo round-trip failed")
            return
        original = bytes(echo.original)
        if msgspec.json.decode(original) != msgspec.json.decode(sent):
            probe.evidence.error = "mismatch"
            rec.add("echo_roundtrip", "fail", started,
                    f"original {original[:80]!r} does not match sent {sent[:80]!r}",
                    probe.evidence)
        else:
            rec.add("echo_roundtrip", "pass", started,
                    f"original matches ({len(sent)} bytes) in "
                    f"{1000 * (time.monotonic() - started):.1f} ms", probe.evidence)

        if not await self._latency(probe):
            return

        started = time.monotonic()
        try:
            await probe.close(1000, "ws-smoke done")
        except Exception as exc:  # any failure here is the finding
            rec.add("normal_close", "fail", started, f"close failed: {exc!r}", probe.evidence)
            return
        ev = probe.evidence
        ok = ev.close_code == CloseCode.NORMAL
        rec.add("normal_close", "pass" if ok else "fail", started,
                "server answered our close with 1000" if ok else
                f"server answered our close with {ev.close_code}: {ev.summary()}", ev)

    async def _latency(self, probe: Probe) -> bool:
        """p50/p95/p99 over --latency-samples round trips; False when the connection is lost."""
        rec, opts = self.rec, self.options
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
                    _detail(f"after {len(samples)} round trips: {exc}", probe.evidence),
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

    # -- /ws -----------------------------------------------------------------------------------

    async def ws_session(self) -> None:
        rec, opts = self.rec, self.options
        probe = Probe(self.target.ws("/ws"), "/ws", opts)
        started = time.monotonic()
        try:
            await probe.open()
            await probe.send({"type": "ping"})
            pong = await probe.recv_until(WsPong, time.monotonic() + opts.timeout)
        except ProbeError as exc:
            rec.add("ws_ping_pong", "fail", started, _detail(str(exc), probe.evidence),
                    probe.evidence)
            rec.skip(["ws_echo"], "skipped: /ws ping failed")
            await probe.abort()
            return
        rec.add("ws_ping_pong", "pass", started,
                f"pong in {1000 * (time.monotonic() - started):.0f} ms (incl. handshake), "
                f"client_id={pong.client_id}", probe.evidence)
        started = time.monotonic()
        nonce = secrets.token_hex(8)
        try:
            sent = await probe.send({"type": "custom", "data": nonce})
            echo = await probe.recv_until(WsEcho, time.monotonic() + opts.timeout)
            if msgspec.json.decode(bytes(echo.data)) != msgspec.json.decode(sent):
                probe.evidence.error = "mismatch"
                raise ProbeError(f"data {bytes(echo.data)[:80]!r} does not match {sent[:80]!r}")
        except ProbeError as exc:
            rec.add("ws_echo", "fail", started, _detail(str(exc), probe.evidence),
                    probe.evidence)
        else:
            rec.add("ws_echo", "pass", started,
                    f"data matches, server_processing_ms={echo.server_processing_ms:g}",
                    probe.evidence)
        finally:
            await probe.abort()

    # -- /ws/health ----------------------------------------------------------------------------

    async def health_session(self) -> None:
        try:
            await self._health_session()
        finally:  # origin_session waits on this whatever happened here
            if not self.health.done():
                self.health.set_result(None)

    async def _health_session(self) -> None:
        rec, opts = self.rec, self.options
        later = ["config", "mixed_content", "heartbeat"] + ([] if opts.quick else ["sustained"])
        probe = Probe(self.target.ws("/ws/health"), "/ws/health", opts)
        started = time.monotonic()
        try:
            await probe.open()
            greeting = await probe.recv_until(HealthStatus, started + opts.timeout)
        except ProbeError as exc:
            self.health.set_result(None)
            rec.add("health_status", "fail", started, _detail(str(exc), probe.evidence),
                    probe.evidence)
            rec.skip(later, "skipped: no health_status")
            await probe.abort()
            return
        self.health.set_result(greeting)
        if greeting.config is not None:
            self._extend_deadline(float(greeting.config.ping_interval))
        try:
            await self._health_steps(probe, greeting, started)
        finally:
            await probe.abort()

    async def _health_steps(self, probe: Probe, greeting: HealthStatus, started: float) -> None:
        rec = self.rec
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
            page_url, page = ((self.target.http_base, f"the checked URL {self.target.ws_base}")
                              if self.target.secure else
                              (env.public_base_url, f"public_base_url {env.public_base_url}"))
            status, detail = mixed_content(env.ws_public_url, page_url, page) or (
                "pass", f"ws_public_url={env.ws_public_url} public_base_url={env.public_base_url}")
            rec.add("mixed_content", status, now, detail, probe.evidence)

        beats = _Beats(opened=started, last_at=started)
        lost = await self._heartbeat_phase(probe, interval, beats)
        if self.options.quick:
            return
        if lost is not None:
            self._sustain_failed(probe, beats, lost)
            return
        await self._sustain_phase(probe, beats)

    async def _heartbeat_phase(self, probe: Probe, server_interval: float | None,
                               beats: _Beats) -> ProbeError | None:
        """Heartbeat delivery: one heartbeat (two in a full run) within interval + grace.

        Returns the error when the connection was lost (a late heartbeat leaves it usable).
        """
        rec, opts = self.rec, self.options
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
                rec.add("heartbeat", "fail", started, _detail(msg, ev), ev,
                        metrics={"expected_interval_s": expected, "grace_s": opts.grace,
                                 "server_interval_s": server_interval or 0.0})
                return None if timed_out else exc
        rec.add("heartbeat", "fail" if beats.number_error else "pass", started,
                beats.number_error or
                f"{ev.heartbeats_received} heartbeat(s), ping_number 1..{beats.last_number}, "
                f"max gap {max(beats.gaps):.2f}s (limit {expected + opts.grace:g}s)",
                ev, metrics={"max_gap_s": round(max(beats.gaps), 3)})
        return None

    async def _sustain_phase(self, probe: Probe, beats: _Beats) -> None:
        """Sustained: still connected --sustain seconds after opening, heartbeats answered."""
        until = beats.opened + self.options.sustain
        ev = probe.evidence
        while time.monotonic() < until:
            try:
                await beats.next(probe, until)
            except ProbeError as exc:
                if ev.error != "timeout":
                    self._sustain_failed(probe, beats, exc)
                    return
                ev.error = ev.error_detail = None  # the window ended quietly
                break
        await self._sustained_end(probe, beats)

    def _sustain_failed(self, probe: Probe, beats: _Beats, exc: ProbeError) -> None:
        ev, sustain = probe.evidence, self.options.sustain
        if ev.close_code is not None:
            text = (f"dropped after {ev.age_at_close_s or 0:.2f}s of {sustain:g}s, "
                    f"{ev.heartbeats_received} heartbeats received")
        else:
            text = f"after {probe.age:.2f}s of {sustain:g}s: {exc}"
        self.rec.add("sustained", "fail", beats.opened, _detail(text, ev), ev,
                     metrics={"age_s": ev.age_at_close_s or round(probe.age, 3)})

    async def _sustained_end(self, probe: Probe, beats: _Beats) -> None:
        rec, opts = self.rec, self.options
        opened, number_error, gaps = beats.opened, beats.number_error, beats.gaps
        # Sustained: still connected after --sustain; ask for live metrics, then close 1000.
        ev = probe.evidence
        try:
            await probe.send({"type": "get_status"})
            status_msg = await probe.recv_until(HealthStatus, time.monotonic() + opts.timeout)
            await probe.close(1000, "ws-smoke done")
        except ProbeError as exc:
            rec.add("sustained", "fail", opened, _detail(f"after {opts.sustain:g}s: {exc}", ev),
                    ev)
            return
        problems = [number_error] if number_error else []
        if ev.close_code != CloseCode.NORMAL:
            problems.append(f"close answered with {ev.close_code}")
        detail = (f"connected {ev.age_at_close_s or 0:.1f}s, {ev.heartbeats_received} "
                  f"heartbeats (server ping_count={status_msg.ping_count}), max gap "
                  f"{max(gaps) if gaps else 0:.2f}s, closed 1000")
        rec.add("sustained", "fail" if problems else "pass", opened,
                "; ".join(problems) if problems else detail, ev,
                metrics={"heartbeats": float(ev.heartbeats_received),
                 "age_s": ev.age_at_close_s or 0.0})

    # -- Origin policy -------------------------------------------------------------------------

    async def origin_session(self) -> None:
        rec, opts = self.rec, self.options
        greeting = await self.health
        started = time.monotonic()
        if greeting is None or greeting.environment is None:
            rec.add("origin_policy", "skip", started,
                    "skipped: allowed_origins unknown (no health_status)")
            return
        allowed = greeting.environment.allowed_origins
        foreign = opts.foreign_origin
        probe = Probe(self.target.ws("/ws/health"), "/ws/health", opts, origin=foreign,
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
                        _detail(f"Origin {foreign}: expected HTTP 403, got: {exc}", ev), ev)
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

