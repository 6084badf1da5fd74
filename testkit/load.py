"""Load clients: a crowd of /ws/health sockets held open, and connect/close churn on /ws/echo.

Used by the reliability and hardening tests (CI-sized) and the soak run; every loop here is
bounded in count and in time, and aims at 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from testkit.stats import or_none, percentile

_decode = msgspec.json.Decoder(dict[str, Any])


@dataclass
class LoadStats:
    """What a crowd of /ws/health clients saw."""

    interval: float
    opened: int = 0
    open_failures: Counter[str] = field(default_factory=Counter)
    heartbeats: int = 0
    gaps: list[float] = field(default_factory=list)  # seconds between heartbeats on one socket
    transit: list[float] = field(default_factory=list)  # arrival minus the server's timestamp
    pongs_sent: int = 0
    drops: Counter[int] = field(default_factory=Counter)  # close code -> count, before our close
    drop_details: list[str] = field(default_factory=list)
    min_heartbeats: int | None = None
    measuring: bool = False  # lateness is recorded once every client is open (steady state)
    # Pong-answering clients start answering (and so become subject to the server's pong
    # timeout) once the whole crowd is open: while one Python process opens thousands of
    # sockets its event loop lags by seconds, which real, separate clients would not.
    all_open: bool = False

    def lateness(self) -> list[float]:
        """How far each heartbeat came after the interval (0 when on time)."""
        return [max(0.0, gap - self.interval) for gap in self.gaps]

    def summary(self) -> dict[str, Any]:
        late = self.lateness()
        return {
            "connections": self.opened,
            "open_failures": dict(self.open_failures),
            "heartbeats": self.heartbeats,
            "pongs_sent": self.pongs_sent,
            "drops_by_code": {str(k): v for k, v in sorted(self.drops.items())},
            "lateness_p50_ms": or_none(percentile(late, 50) * 1000),
            "lateness_p99_ms": or_none(percentile(late, 99) * 1000),
            "lateness_max_ms": round(max(late, default=0.0) * 1000, 1),
            "max_gap_s": round(max(self.gaps, default=0.0), 3),
            "transit_p50_ms": or_none(percentile(self.transit, 50) * 1000),
            "transit_p99_ms": or_none(percentile(self.transit, 99) * 1000),
            "min_heartbeats_per_connection": self.min_heartbeats,
        }


async def _hold(ws: ClientConnection, stats: LoadStats, stop: asyncio.Event,
                answer_pongs: bool) -> None:
    """Read heartbeats until ``stop``; a close before that is a drop."""
    last = time.monotonic()
    beats = 0
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            receiving = asyncio.ensure_future(ws.recv())
            await asyncio.wait([receiving, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not receiving.done():
                receiving.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await receiving
                return
            try:
                data = receiving.result()
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else 1006
                stats.drops[code] += 1
                reason = closed.rcvd.reason if closed.rcvd else ""
                if len(stats.drop_details) < 20:
                    stats.drop_details.append(f"{code} {reason!r} after {beats} heartbeat(s)")
                return
            now = time.monotonic()
            message = _decode.decode(data)
            if message.get("type") != "heartbeat":
                continue
            stats.heartbeats += 1
            beats += 1
            if stats.measuring:
                stats.gaps.append(now - last)
                stats.transit.append(max(0.0, time.time() - float(message["timestamp"])))
            last = now
            if answer_pongs and stats.all_open:
                await ws.send(b'{"type":"pong","ping_number":%d}' % message["ping_number"],
                              text=True)
                stats.pongs_sent += 1
    finally:
        stopping.cancel()
        stats.min_heartbeats = beats if stats.min_heartbeats is None else min(
            stats.min_heartbeats, beats)


async def crowd(url: str, count: int, hold: float, stats: LoadStats, *,
                pong_every: int = 2, concurrency: int = 64, open_timeout: float = 30.0,
                on_held: Callable[[], None] | None = None,
                samples: Callable[[], None] | None = None,
                sample_every: float = 1.0, sources: int = 1) -> None:
    """Open ``count`` /ws/health clients, hold them ``hold`` seconds, close them with 1000.

    ``sources`` > 1: client ``i`` connects from 127.0.0.(2 + i % sources), so nginx's
    per-address limits see that many clients, as a deployment's do.

    Every ``pong_every``-th client answers heartbeats once all are open (so the server's pong
    timeout is in play for them); the others behave like wscat. ``samples`` is called every
    ``sample_every`` seconds while held (RSS readings), ``on_held`` once all are open.
    """
    gate = asyncio.Semaphore(concurrency)
    sockets: list[ClientConnection] = []

    async def open_one(i: int) -> None:
        local: dict[str, Any] = (
            {"local_addr": (f"127.0.0.{2 + i % sources}", 0)} if sources > 1 else {})
        async with gate:
            try:
                ws = await connect(url, open_timeout=open_timeout, ping_interval=None,
                                   close_timeout=5, max_queue=64, **local)
            except InvalidStatus as exc:
                stats.open_failures[f"http {exc.response.status_code}"] += 1
                return
            except (OSError, TimeoutError) as exc:
                stats.open_failures[type(exc).__name__] += 1
                return
            sockets.append(ws)
            stats.opened += 1

    if not 1 <= sources <= 250:
        raise ValueError(f"sources must be 1-250 loopback addresses, not {sources}")
    await asyncio.gather(*(open_one(i) for i in range(count)))
    stop = asyncio.Event()
    holders = [asyncio.create_task(_hold(ws, stats, stop, pong_every > 0 and i % pong_every == 0))
               for i, ws in enumerate(sockets)]
    stats.all_open = True
    if on_held is not None:
        on_held()
    held_at = time.monotonic()
    deadline = held_at + hold
    while (left := deadline - time.monotonic()) > 0:  # bounded by ``hold``
        # One interval of warm-up: heartbeats queued while the crowd was opening are not
        # steady-state lateness.
        stats.measuring = time.monotonic() - held_at >= stats.interval
        if samples is not None:
            samples()
        await asyncio.sleep(min(sample_every, left, stats.interval))  # sampling cadence
    stop.set()
    await asyncio.gather(*holders)
    closing = [asyncio.create_task(ws.close(1000, "load run over")) for ws in sockets]
    await asyncio.gather(*closing, return_exceptions=True)


async def churn(url: str, count: int, parallel: int = 16) -> Counter[str]:
    """``count`` connect / greeting / echo / close-1000 cycles on /ws/echo, ``parallel`` at once.

    Returns outcomes: ``closed 1000`` for a clean cycle, else the exception's name.
    """
    outcomes: Counter[str] = Counter()
    cycles = iter(range(count))

    async def worker() -> None:
        for n in cycles:  # shared iterator: ``count`` cycles in all
            try:
                async with connect(url, ping_interval=None, close_timeout=5,
                                   open_timeout=10) as ws:
                    async with asyncio.timeout(10):
                        await ws.recv()  # welcome
                        await ws.send(b'{"type":"churn","n":%d}' % n, text=True)
                        while _decode.decode(await ws.recv()).get("type") != "echo":
                            pass  # a heartbeat came first
                outcomes[f"closed {ws.close_code}"] += 1
            except (OSError, ConnectionClosed, TimeoutError, InvalidStatus) as exc:
                outcomes[type(exc).__name__] += 1

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return outcomes
