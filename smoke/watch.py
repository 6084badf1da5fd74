"""``ws-smoke watch``: the seed's reconnect loop, with every drop logged and summarised.

Stays on ``/ws/health``, answers heartbeats with pongs, reconnects with exponential back-off
(reset after a connection that delivered a heartbeat), and logs each drop with its close
code, reason, connection age and heartbeats received. A connection that is still open but
misbehaves (no greeting, a message outside the contract, no message for ping_interval +
``--grace``: stalled) is logged as an error of that kind, closed by us, and reconnected; it
is not a drop. Stops on Ctrl-C, SIGTERM or ``--duration``; our own close at the end is not a
drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from service.messages import HealthStatus, Heartbeat
from smoke.model import Evidence, close_code_name
from smoke.probe import Probe, ProbeError
from smoke.target import Options, Target

INITIAL_BACKOFF = 0.5


def _log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


@dataclass
class Tally:
    connections: int = 0
    failed_attempts: int = 0
    heartbeats: int = 0
    drops: list[Evidence] = field(default_factory=list)
    errors: list[Evidence] = field(default_factory=list)
    """Connections we closed because they misbehaved while open (stalled, off-contract)."""
    ages: list[float] = field(default_factory=list)

    def summary(self, elapsed: float) -> str:
        by_code = Counter(d.close_code for d in self.drops)
        codes = ", ".join(f"{code} ({close_code_name(code)}) x{n}"
                          for code, n in sorted(by_code.items()) if code is not None) or "none"
        by_kind = Counter(e.error for e in self.errors)
        kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(by_kind.items()) if kind)
        longest = max(self.ages, default=0.0)
        median = statistics.median(self.ages) if self.ages else 0.0
        return (f"watch summary after {elapsed:.1f}s: {self.connections} connection(s), "
                f"{len(self.drops)} drop(s), {len(self.errors)} error(s), "
                f"{self.failed_attempts} failed attempt(s), {self.heartbeats} heartbeat(s); "
                f"drops by code: {codes}; errors by kind: {kinds or 'none'}; "
                f"connection age longest {longest:.2f}s, median {median:.2f}s")


async def _session(probe: Probe, tally: Tally, stop: asyncio.Event) -> bool:
    """One connection until it drops or misbehaves (True, ProbeError) or we stop (False)."""
    options = probe.options
    greeting = await probe.recv_until(HealthStatus, time.monotonic() + options.timeout)
    interval = greeting.config.ping_interval if greeting.config else None
    _log(f"connected {probe.evidence.url} client_id={greeting.client_id} "
         f"ping_interval={interval}")
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
                tally.heartbeats += 1
                await probe.answer(message)
    finally:
        stopping.cancel()


async def _settle(probe: Probe, tally: Tally, ended: bool) -> bool:
    """Log a drop or an error, or close our own connection; True when the back-off may reset.

    ``ended``: the session ended by itself (a close, or an error on a still-open socket).
    """
    ev = probe.evidence
    if not ended:
        tally.ages.append(probe.age)
        with contextlib.suppress(Exception):
            await probe.close(1000, "ws-smoke watch stopped")
        return False
    if ev.close_code is None:  # still open: the connection misbehaved, it did not drop
        tally.errors.append(ev)
        tally.ages.append(probe.age)
        _log(f"error #{len(tally.errors)}: {ev.error or 'unknown'}: {ev.error_detail} after "
             f"{probe.age:.2f}s, {ev.heartbeats_received} heartbeat(s) on this connection; "
             "closing it")
        with contextlib.suppress(Exception):
            await probe.close(1000, f"ws-smoke watch: {ev.error or 'error'}")
        return ev.heartbeats_received > 0
    tally.drops.append(ev)
    age = ev.age_at_close_s if ev.age_at_close_s is not None else probe.age
    tally.ages.append(age)
    reason = f" reason {ev.close_reason!r}" if ev.close_reason else ""
    _log(f"drop #{len(tally.drops)}: code {ev.close_code} ({close_code_name(ev.close_code)})"
         f"{reason} after {age:.2f}s, idle {ev.idle_at_close_s or 0:.2f}s, "
         f"{ev.heartbeats_received} heartbeat(s) on this connection")
    return ev.heartbeats_received > 0


async def watch(target: Target, options: Options, *, duration: float | None = None,
                max_backoff: float = 30.0) -> int:
    """Exit status: 0 no drop or error, 1 at least one drop or error, 2 never connected."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    started = time.monotonic()
    tally = Tally()
    backoff = INITIAL_BACKOFF
    url = target.ws("/ws/health")
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
                    tally.failed_attempts += 1
                    _log(f"connect failed: {exc}")
                else:
                    dropped = True
            if probe.evidence.opened and await _settle(probe, tally, dropped):
                backoff = INITIAL_BACKOFF
            if stop.is_set():
                break
            _log(f"reconnecting in {backoff:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, max_backoff)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    _log(tally.summary(time.monotonic() - started))
    sys.stdout.flush()
    if tally.connections == 0:
        return 2
    return 1 if tally.drops or tally.errors else 0
