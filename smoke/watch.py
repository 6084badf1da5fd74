"""``ws-smoke watch``: the seed's reconnect loop, with every drop logged and summarised.

Stays on ``/ws/health``, answers heartbeats with pongs, reconnects after every drop and logs
it with its close code, reason, connection age and heartbeats received. A connection that is
still open but misbehaves (no greeting, a message outside the contract, no message for
ping_interval + ``--grace``: stalled) is logged as an error of that kind, closed by us, and
reconnected; it is not a drop. Stops on Ctrl-C, SIGTERM or ``--duration``; our own close at
the end is not a drop.

Reconnecting follows the client rule of a rolling deploy:

* a **1001 Going Away** close (the backend is draining: restart, deploy) is a *move*: the
  first retry comes after ``uniform(0, --jitter)`` seconds (default 1), so clients of one
  backend do not all come back in the same instant; each further failed attempt doubles the
  window, full jitter: ``uniform(0, min(--max-backoff, jitter * 2**n))``;
* any other drop, error or failed attempt keeps the exponential back-off (0.5 s doubling to
  ``--max-backoff``, reset after a connection that delivered a heartbeat), with full jitter:
  the wait is ``uniform(0, backoff)``.

For each drop and error the **gap** is measured: seconds from the close (or error) to the
next successful greeting (``health_status``), logged as ``back after 0.42s``.

Exit status:

* **0** no drop and no error; or every drop was a 1001 followed by a reconnect within
  ``--max-gap`` seconds (default 5) - a rolling deploy done right - and no error;
* **1** any other drop (1006, 1011, ...), any error, a gap over ``--max-gap``, or a drop the
  watcher was still not back from when it stopped;
* **2** never connected.

Failed handshakes alone (refused, HTTP 502/503 while a backend drains) do not fail the run:
they are counted, with their HTTP statuses, and lengthen the gap they fall into.
``--json FILE`` writes all of it at exit (:class:`WatchReport`). ``--metrics-port PORT``
serves it live for Prometheus while the watch runs (:mod:`smoke.exporter`), with the
diagnosis of the last drop, error or failed attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

from service.codes import CloseCode, close_code_name
from service.messages import HealthStatus, Heartbeat
from smoke.checks.http import ask_after_drop
from smoke.diagnose import diagnose
from smoke.exporter import WatchMetrics, metrics_url
from smoke.model import CheckResult, Evidence
from smoke.probe import Probe, ProbeError
from smoke.target import Options, Target

INITIAL_BACKOFF = 0.5
GOING_AWAY = CloseCode.GOING_AWAY
DEFAULT_JITTER = 1.0
DEFAULT_MAX_GAP = 5.0

Settled = Literal["moved", "reset", "keep"]
"""How a connection ended, for the next wait: a 1001 move, a reset of the back-off (it had
delivered a heartbeat), or keep the back-off as it is."""


def _log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


# -- the JSON report ---------------------------------------------------------------------------


class DropRecord(msgspec.Struct, kw_only=True):
    code: int
    reason: str
    age_s: float
    """How long the connection had been open."""
    gap_s: float | None
    """Close to the next greeting; None: not back yet when the watcher stopped."""
    closed_by: str | None
    heartbeats: int
    at_s: float
    """When it closed, in seconds since the watch started."""
    diagnosis: str | None = None
    """The check mode's diagnosis code for this drop (``backend_gone`` when ``GET /health``
    was refused after a 1006)."""


class ErrorRecord(msgspec.Struct, kw_only=True):
    kind: str
    detail: str
    age_s: float
    gap_s: float | None
    at_s: float


class FailedAttempts(msgspec.Struct, kw_only=True):
    count: int
    by_kind: dict[str, int]
    """``refused``, ``http_status``, ``connect_timeout``, ... (smoke.model.ErrorKind)."""
    http_statuses: dict[str, int]
    """The statuses of rejected handshakes: ``{"503": 2}`` while a backend drains."""


class GapStats(msgspec.Struct, kw_only=True):
    count: int
    max_s: float | None
    p50_s: float | None


class WatchReport(msgspec.Struct, kw_only=True):
    tool: str
    url: str
    elapsed_s: float
    exit_code: int
    verdict: str
    connections: int
    failed_attempts: FailedAttempts
    heartbeats: int
    moved: int
    """Drops with 1001 Going Away."""
    other_drops: int
    drops: list[DropRecord]
    errors: list[ErrorRecord]
    gaps: GapStats
    max_gap_s: float | None
    """The longest measured gap (None: no gap measured)."""
    max_gap_limit_s: float
    """``--max-gap``: a 1001 move back within this is not a failure."""
    jitter_s: float


def write_report(report: WatchReport, path: Path) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")


# -- the tally ---------------------------------------------------------------------------------


@dataclass
class Tally:
    connections: int = 0
    failed_attempts: int = 0
    heartbeats: int = 0
    drops: list[Evidence] = field(default_factory=list)
    errors: list[Evidence] = field(default_factory=list)
    """Connections we closed because they misbehaved while open (stalled, off-contract)."""
    ages: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    drop_records: list[DropRecord] = field(default_factory=list)
    error_records: list[ErrorRecord] = field(default_factory=list)
    failed_kinds: Counter[str] = field(default_factory=Counter)
    failed_statuses: Counter[int] = field(default_factory=Counter)
    metrics: WatchMetrics | None = None
    """The live exporter (``--metrics-port``), told of every event."""
    ping_interval: float | None = None
    """The server's, from the last greeting: the diagnoses judge idle times by it."""
    _pending: list[tuple[float, DropRecord | ErrorRecord]] = field(default_factory=list)
    """Drops and errors not yet followed by a greeting: (monotonic time, record)."""

    # -- events ----------------------------------------------------------------------------

    def dropped(self, ev: Evidence, age: float) -> DropRecord:
        now = time.monotonic()
        record = DropRecord(code=ev.close_code if ev.close_code is not None else 1006,
                            reason=ev.close_reason or "", age_s=round(age, 3), gap_s=None,
                            closed_by=ev.closed_by, heartbeats=ev.heartbeats_received,
                            at_s=round(now - self.started, 3))
        self.drops.append(ev)
        self.ages.append(age)
        self.drop_records.append(record)
        self._pending.append((now, record))
        if self.metrics is not None:
            self.metrics.dropped(record.code)
        return record

    def errored(self, ev: Evidence, age: float) -> ErrorRecord:
        now = time.monotonic()
        record = ErrorRecord(kind=ev.error or "unknown", detail=ev.error_detail or "",
                             age_s=round(age, 3), gap_s=None, at_s=round(now - self.started, 3))
        self.errors.append(ev)
        self.ages.append(age)
        self.error_records.append(record)
        self._pending.append((now, record))
        if self.metrics is not None:
            self.metrics.errored(record.kind)
        return record

    def failed(self, ev: Evidence) -> None:
        self.failed_attempts += 1
        self.failed_kinds[ev.error or "unknown"] += 1
        if ev.http_status is not None and ev.http_status != 101:
            self.failed_statuses[ev.http_status] += 1
        if self.metrics is not None:
            self.metrics.failed_attempt(ev.error or "unknown", ev.http_status)

    def greeted(self, ping_interval: float | None = None) -> list[float]:
        """A greeting arrived: the gaps of every drop and error still waiting for one."""
        now = time.monotonic()
        gaps = []
        for at, record in self._pending:
            record.gap_s = round(now - at, 3)
            gaps.append(record.gap_s)
        self._pending.clear()
        self.ping_interval = ping_interval
        if self.metrics is not None:
            self.metrics.connected(gaps, ping_interval)
        return gaps

    def heartbeat(self, gap: float) -> None:
        """A heartbeat, ``gap`` seconds after the previous one (or the greeting)."""
        self.heartbeats += 1
        if self.metrics is not None:
            self.metrics.heartbeat(gap)

    # -- figures ---------------------------------------------------------------------------

    @property
    def moved(self) -> int:
        return sum(d.code == GOING_AWAY for d in self.drop_records)

    @property
    def gaps(self) -> list[float]:
        records: list[DropRecord | ErrorRecord] = [*self.drop_records, *self.error_records]
        return [r.gap_s for r in records if r.gap_s is not None]

    def verdict(self, max_gap: float = DEFAULT_MAX_GAP) -> tuple[int, str]:
        """(exit status, why): see the module docstring."""
        if self.connections == 0:
            return 2, "never connected"
        problems: list[str] = []
        other = len(self.drop_records) - self.moved
        if other:
            problems.append(f"{other} drop(s) other than 1001")
        if self.errors:
            problems.append(f"{len(self.errors)} error(s)")
        late = [d for d in self.drop_records if d.gap_s is not None and d.gap_s > max_gap]
        if late:
            problems.append(f"{len(late)} gap(s) over max-gap {max_gap:g}s")
        if any(d.gap_s is None for d in self.drop_records):
            problems.append("not back from the last drop when the watch stopped")
        if problems:
            return 1, "; ".join(problems)
        if self.drop_records:
            return 0, (f"every drop was a 1001 move, back within max-gap {max_gap:g}s")
        return 0, "no drop, no error"

    def summary(self, elapsed: float, max_gap: float = DEFAULT_MAX_GAP) -> str:
        by_code = Counter(d.close_code for d in self.drops)
        codes = ", ".join(f"{code} ({close_code_name(code)}) x{n}"
                          for code, n in sorted(by_code.items()) if code is not None) or "none"
        by_kind = Counter(e.error for e in self.errors)
        kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(by_kind.items()) if kind)
        longest = max(self.ages, default=0.0)
        median = statistics.median(self.ages) if self.ages else 0.0
        failed = ", ".join([*(f"HTTP {s} x{n}" for s, n in sorted(self.failed_statuses.items())),
                            *(f"{k} x{n}" for k, n in sorted(self.failed_kinds.items())
                              if k != "http_status")])
        gaps = self.gaps
        gap_text = (f"gaps: {len(gaps)}, max {max(gaps):.2f}s, p50 {statistics.median(gaps):.2f}s"
                    if gaps else "gaps: none")
        code, why = self.verdict(max_gap)
        return (f"watch summary after {elapsed:.1f}s: {self.connections} connection(s), "
                f"{len(self.drops)} drop(s), {len(self.errors)} error(s), "
                f"{self.failed_attempts} failed attempt(s), {self.heartbeats} heartbeat(s); "
                f"drops by code: {codes}; errors by kind: {kinds or 'none'}; "
                f"connection age longest {longest:.2f}s, median {median:.2f}s; "
                f"moved (1001): {self.moved}, other drops: {len(self.drops) - self.moved}; "
                f"{gap_text}; failed attempts: {failed or 'none'}; exit {code}: {why}")

    def report(self, url: str, elapsed: float, *, max_gap: float = DEFAULT_MAX_GAP,
               jitter: float = DEFAULT_JITTER) -> WatchReport:
        gaps = self.gaps
        code, why = self.verdict(max_gap)
        return WatchReport(
            tool="ws-smoke watch", url=url, elapsed_s=round(elapsed, 3), exit_code=code,
            verdict=why, connections=self.connections,
            failed_attempts=FailedAttempts(
                count=self.failed_attempts, by_kind=dict(sorted(self.failed_kinds.items())),
                http_statuses={str(s): n for s, n in sorted(self.failed_statuses.items())},
            ),
            heartbeats=self.heartbeats, moved=self.moved,
            other_drops=len(self.drop_records) - self.moved,
            drops=self.drop_records, errors=self.error_records,
            gaps=GapStats(count=len(gaps), max_s=max(gaps, default=None),
                          p50_s=round(statistics.median(gaps), 3) if gaps else None),
            max_gap_s=max(gaps, default=None), max_gap_limit_s=max_gap, jitter_s=jitter,
        )


@dataclass
class Backoff:
    """The next wait: full jitter, ``uniform(0, window)``; the window doubles after each wait
    up to ``max_backoff``, resets to 0.5 s after a connection that delivered a heartbeat, and
    starts at ``jitter`` after a 1001 move."""

    max_backoff: float = 30.0
    jitter: float = DEFAULT_JITTER
    window: float = INITIAL_BACKOFF

    def settle(self, settled: Settled) -> None:
        if settled == "reset":
            self.window = INITIAL_BACKOFF
        elif settled == "moved":
            self.window = self.jitter

    def next_wait(self) -> tuple[float, float]:
        """(window, wait): the wait drawn from [0, window]; the window then doubles."""
        window = min(self.window, self.max_backoff)
        wait = random.uniform(0.0, window)  # noqa: S311 - jitter, not cryptography
        self.window = min(self.window * 2, self.max_backoff)
        return window, wait


# -- diagnoses -------------------------------------------------------------------------------


def diagnosis_code(ev: Evidence, target: Target, options: Options,
                   ping_interval: float | None) -> str:
    """The check mode's diagnosis of one failed attempt, drop or error (its code).

    The evidence is judged as the check whose failure it resembles: a failed attempt as the
    handshake, a stalled connection as a missing heartbeat, a drop as the sustained
    connection. After a 1006 the watcher has asked ``GET /health`` (:func:`_diagnose_drop`),
    so a dead backend is ``backend_gone`` here too.
    """
    name: Literal["handshake", "heartbeat", "sustained"] = (
        "handshake" if not ev.opened else
        "heartbeat" if ev.close_code is None and ev.error == "stalled" else "sustained")
    metrics = ({"expected_interval_s": ping_interval or 0.0, "grace_s": options.grace}
               if name == "heartbeat" else {})
    result = CheckResult(name=name, title=f"ws-smoke watch {name}", status="fail",
                         duration_s=0.0, detail=ev.error_detail or ev.summary(), evidence=ev,
                         metrics=metrics)
    # A failed result always gets a diagnosis (the table ends with check_failed).
    return diagnose(target, options, [result], ping_interval=ping_interval)[0].code


async def _diagnose_drop(ev: Evidence, target: Target, options: Options, tally: Tally) -> str:
    """The drop's diagnosis code, told to the exporter. A 1006 alone cannot tell a dead
    backend from a proxy's cut, so after one ``GET /health`` is asked first."""
    if ev.close_code == CloseCode.ABNORMAL_CLOSURE and ev.closed_by == "network":
        await ask_after_drop(options, target.http("/health"), [ev])
    code = diagnosis_code(ev, target, options, tally.ping_interval)
    if tally.metrics is not None:
        tally.metrics.diagnosed(code)
    return code


# -- one connection ----------------------------------------------------------------------------


async def _session(probe: Probe, tally: Tally, stop: asyncio.Event) -> bool:
    """One connection until it drops or misbehaves (True, ProbeError) or we stop (False)."""
    options = probe.options
    greeting = await probe.recv_until(HealthStatus, time.monotonic() + options.timeout)
    last_beat = time.monotonic()
    interval = greeting.config.ping_interval if greeting.config else None
    gaps = tally.greeted(float(interval) if interval else None)
    _log(f"connected {probe.evidence.url} client_id={greeting.client_id} "
         f"ping_interval={interval}")
    if gaps:
        _log(f"back after {max(gaps):.2f}s")
    # /ws/health sends a heartbeat every ping_interval: silence longer than that + grace is
    # a stalled connection (a proxy holding it open, a frozen server), reported as such.
    quiet = (float(interval) if interval else options.timeout) + options.grace
    stopping = asyncio.create_task(stop.wait())
    try:
        while True:
            receiving = asyncio.create_task(probe.recv(wait=quiet))
            await asyncio.wait([receiving, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not receiving.done():
                receiving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiving
                return False
            try:
                message = receiving.result()
            except ProbeError:
                ev = probe.evidence
                if ev.error == "timeout":
                    ev.error = "stalled"
                    ev.error_detail = (f"no message for {quiet:g}s (ping_interval "
                                       f"{interval if interval else 'unknown'} + grace "
                                       f"{options.grace:g}s) on an open connection")
                raise
            if isinstance(message, Heartbeat):
                now = time.monotonic()
                tally.heartbeat(now - last_beat)
                last_beat = now
                await probe.answer(message)
    finally:
        stopping.cancel()


async def _settle(probe: Probe, tally: Tally, ended: bool,
                  diagnosis: str | None = None) -> Settled:
    """Log a drop or an error, or close our own connection; how the next wait is chosen.

    ``ended``: the session ended by itself (a close, or an error on a still-open socket).
    ``diagnosis``: the drop's diagnosis code, logged with it.
    """
    ev = probe.evidence
    if not ended:
        tally.ages.append(probe.age)
        with contextlib.suppress(Exception):
            await probe.close(1000, "ws-smoke watch stopped")
        return "keep"
    if ev.close_code is None:  # still open: the connection misbehaved, it did not drop
        age = probe.age
        tally.errored(ev, age)
        _log(f"error #{len(tally.errors)}: {ev.error or 'unknown'}: {ev.error_detail} after "
             f"{age:.2f}s, {ev.heartbeats_received} heartbeat(s) on this connection; "
             "closing it")
        with contextlib.suppress(Exception):
            await probe.close(1000, f"ws-smoke watch: {ev.error or 'error'}")
        return "reset" if ev.heartbeats_received > 0 else "keep"
    age = ev.age_at_close_s if ev.age_at_close_s is not None else probe.age
    tally.dropped(ev, age).diagnosis = diagnosis
    reason = f" reason {ev.close_reason!r}" if ev.close_reason else ""
    after = f"; {ev.after_drop}" if ev.after_drop else ""
    code = f" [{diagnosis}]" if diagnosis else ""
    _log(f"drop #{len(tally.drops)}: code {ev.close_code} ({close_code_name(ev.close_code)})"
         f"{reason} after {age:.2f}s, idle {ev.idle_at_close_s or 0:.2f}s, "
         f"{ev.heartbeats_received} heartbeat(s) on this connection{after}{code}")
    if ev.close_code == GOING_AWAY:
        return "moved"
    return "reset" if ev.heartbeats_received > 0 else "keep"


async def watch(target: Target, options: Options, *, duration: float | None = None,
                max_backoff: float = 30.0, jitter: float = DEFAULT_JITTER,
                max_gap: float = DEFAULT_MAX_GAP, json_path: Path | None = None,
                metrics_port: int | None = None, metrics_address: str = "127.0.0.1") -> int:
    """Exit status: see the module docstring (0 clean or only 1001 moves back within
    ``max_gap``, 1 other drops, errors or long gaps, 2 never connected or the metrics port
    cannot be bound)."""
    url = target.ws("/ws/health")
    metrics: WatchMetrics | None = None
    if metrics_port is not None:
        metrics = WatchMetrics(url)
        try:
            host, port = metrics.serve(metrics_address, metrics_port)
        except OSError as exc:
            _log(f"cannot serve metrics on {metrics_address} port {metrics_port}: {exc}")
            return 2
        _log(f"metrics on {metrics_url(host, port)}")
    try:
        return await _watch(target, options, url, metrics, duration=duration,
                            max_backoff=max_backoff, jitter=jitter, max_gap=max_gap,
                            json_path=json_path)
    finally:
        if metrics is not None:
            metrics.close()


async def _watch(target: Target, options: Options, url: str, metrics: WatchMetrics | None, *,
                 duration: float | None, max_backoff: float, jitter: float, max_gap: float,
                 json_path: Path | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    tally = Tally(metrics=metrics)
    backoff = Backoff(max_backoff=max_backoff, jitter=jitter)
    _log(f"watching {url} (Ctrl-C to stop)")
    try:
        while not stop.is_set():
            probe = Probe(url, "/ws/health", options)
            dropped = False
            try:
                await probe.open()
                tally.connections += 1
                dropped = await _session(probe, tally, stop)
            except ProbeError as exc:
                ev = probe.evidence
                if not ev.opened:
                    tally.failed(ev)
                    _log(f"connect failed: {exc}")
                    if metrics is not None:
                        metrics.diagnosed(diagnosis_code(ev, target, options,
                                                         tally.ping_interval))
                else:
                    dropped = True
            settled: Settled = "keep"
            if probe.evidence.opened:
                diagnosis = (await _diagnose_drop(probe.evidence, target, options, tally)
                             if dropped else None)  # before _settle closes it: as it ended
                settled = await _settle(probe, tally, dropped, diagnosis)
                backoff.settle(settled)  # a 1001: the backend drains, come back soon
            if stop.is_set():
                break
            window, wait = backoff.next_wait()
            prefix = "moved (1001): " if settled == "moved" else ""
            _log(f"{prefix}reconnecting in {window:g}s at most: waiting {wait:.2f}s "
                 "(full jitter)")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if metrics is not None:
            metrics.stopped()
    elapsed = time.monotonic() - tally.started
    _log(tally.summary(elapsed, max_gap))
    sys.stdout.flush()
    code, _ = tally.verdict(max_gap)
    if json_path is not None:
        write_report(tally.report(url, elapsed, max_gap=max_gap, jitter=jitter), json_path)
    return code
