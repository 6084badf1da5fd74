"""The load generator: picows clients in one asyncio process (run on its own core).

Every loop here is bounded twice, by a count and by a deadline, and stops by itself.
Messages are matched by counting, never parsed: a client sends one message, waits for the
next text frame that is not a greeting or heartbeat, and only then sends the next one.

The clients offer no extension (picows sends no ``Sec-WebSocket-Extensions``), so no server
compresses: every figure is measured without permessage-deflate. ``hold_load(...,
offer_deflate=True)`` is the one exception, for the memory a negotiated permessage-deflate
costs per idle connection (``DEFLATE_OFFER``, websockets' and browsers' default offer).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

MESSAGE = b'{"type":"message","data":"benchmark payload 0123456789abcdef"}'
_SKIP = (b'"type":"heartbeat"', b'"type":"welcome"', b'"type":"health_status"')
_now = time.perf_counter
DEFLATE_OFFER = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}


def _is_push(payload: bytes) -> bool:
    """A server-initiated message (greeting or heartbeat), not an answer."""
    head = payload[:40]
    return any(marker in head for marker in _SKIP)


class _Client(WSListener):
    """One connection; the runner that owns it decides what happens on each answer."""

    def __init__(self, runner: _Runner | None) -> None:
        self.runner = runner
        self.transport: WSTransport | None = None
        self.sent_at = 0.0
        self.pushes: list[float] = []  # arrival times of heartbeats (hold mode)
        self.answered: asyncio.Future[None] | None = None
        self.closing = False
        self.dropped = False
        self.deflate = False  # the server took a permessage-deflate offer

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        extensions = transport.response.headers.get("Sec-WebSocket-Extensions") or ""
        self.deflate = "permessage-deflate" in extensions

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if frame.rsv1:  # compressed (a deflate hold): unreadable here, and only pushes come
            self.pushes.append(_now())
        elif kind == WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            if _is_push(payload):
                if b'"heartbeat"' in payload[:40]:
                    self.pushes.append(_now())
                return
            if self.runner is not None:
                self.runner.on_answer(self)
            elif self.answered is not None and not self.answered.done():
                self.answered.set_result(None)
        elif kind == WSMsgType.CLOSE:
            if not self.closing:
                self.dropped = True
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closing:
            self.dropped = True
        if self.answered is not None and not self.answered.done():
            self.answered.set_exception(ConnectionError("disconnected"))
        if self.runner is not None:
            self.runner.on_gone(self)

    def send(self) -> None:
        assert self.transport is not None
        self.sent_at = _now()
        self.transport.send(WSMsgType.TEXT, MESSAGE)

    async def close(self, timeout: float = 5.0) -> None:
        self.closing = True
        if self.transport is None or self.transport.is_disconnected:
            return
        self.transport.send_close(WSCloseCode.OK)
        try:
            await asyncio.wait_for(self.transport.wait_disconnected(), timeout)
        except TimeoutError:
            self.transport.disconnect(graceful=False)


class WindowHooks:
    """Called at the start and end of a measuring window (server CPU sampling)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class EchoResult:
    """Closed-loop echo over ``connections`` connections, measured over ``seconds``."""

    connections: int
    messages: int
    seconds: float
    rtt_us: list[float] = field(default_factory=list)
    client_cpu_s: float = 0.0
    errors: int = 0


class _Runner:
    def __init__(self, limit: int, deadline: float) -> None:
        self.limit = limit
        self.deadline = deadline
        self.sent = 0
        self.done = 0
        self.measuring = False
        self.rtts: list[float] = []
        self.outstanding = 0
        self.idle = asyncio.get_running_loop().create_future()
        self.gone = 0

    def start(self, client: _Client) -> None:
        self.outstanding += 1
        self.sent += 1
        client.send()

    def on_answer(self, client: _Client) -> None:
        now = _now()
        self.outstanding -= 1
        if self.measuring:
            self.rtts.append(now - client.sent_at)
            self.done += 1
        if now < self.deadline and (not self.measuring or self.sent < self.limit):
            self.start(client)  # the budget applies to the window, not to the warm-up
        elif self.outstanding == 0 and self.measuring and not self.idle.done():
            self.idle.set_result(None)

    def on_gone(self, client: _Client) -> None:
        if not client.closing:
            self.gone += 1
            self.outstanding -= 1
            if self.outstanding <= 0 and not self.idle.done():
                self.idle.set_result(None)


async def connect(url: str, runner: _Runner | None = None, timeout: float = 10.0, *,
                  offer_deflate: bool = False) -> _Client:
    _, client = await ws_connect(
        lambda: _Client(runner), url, websocket_handshake_timeout=timeout,
        extra_headers=DEFLATE_OFFER if offer_deflate else None,
    )
    assert isinstance(client, _Client)
    return client


async def _open_many(url: str, count: int, concurrency: int, deadline: float,
                     runner: _Runner | None = None, *,
                     offer_deflate: bool = False) -> tuple[list[_Client], int]:
    """Open up to ``count`` connections, ``concurrency`` at a time, until ``deadline``."""
    clients: list[_Client] = []
    failures = 0
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal failures
        async with gate:
            if time.monotonic() > deadline:
                failures += 1
                return
            try:
                clients.append(await connect(url, runner, offer_deflate=offer_deflate))
            except Exception:  # refused, timed out, handshake error: counted, not retried
                failures += 1

    await asyncio.gather(*(one() for _ in range(count)))
    return clients, failures


async def _close_all(clients: list[_Client], concurrency: int = 500) -> None:
    for start in range(0, len(clients), concurrency):
        await asyncio.gather(*(c.close() for c in clients[start:start + concurrency]))


async def _settle_greeting(seconds: float = 0.05) -> None:
    """Give greetings time to arrive (they are skipped by content anyway)."""
    await asyncio.sleep(seconds)


async def echo_load(url: str, connections: int, seconds: float, max_messages: int, *,
                    warmup: float = 0.5, hooks: WindowHooks | None = None) -> EchoResult:
    """``connections`` closed loops for ``warmup`` + ``seconds`` (or ``max_messages``)."""
    loop_deadline = time.monotonic() + warmup + seconds + 30
    runner = _Runner(max_messages, _now() + warmup + seconds)
    clients, failures = await _open_many(url, connections, 50, loop_deadline, runner)
    await _settle_greeting()
    for client in clients:
        runner.start(client)
    await asyncio.sleep(warmup)
    if hooks:
        hooks.start()
    runner.measuring = True
    runner.sent = 0  # the message budget counts from the start of the window
    cpu0, t0 = time.process_time(), _now()
    runner.deadline = t0 + seconds
    if clients:  # none opened (refused, a wrong path): nothing will finish the window
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(runner.idle), seconds + 10)
    elapsed = _now() - t0
    cpu = time.process_time() - cpu0
    if hooks:
        hooks.stop()
    runner.measuring = False
    await _close_all(clients)
    return EchoResult(
        connections=len(clients), messages=runner.done, seconds=elapsed,
        rtt_us=[r * 1e6 for r in runner.rtts], client_cpu_s=cpu,
        errors=failures + runner.gone,
    )


@dataclass
class HandshakeResult:
    handshakes: int
    seconds: float
    client_cpu_s: float
    errors: int


async def handshake_load(url: str, count: int, seconds: float, concurrency: int = 8,
                         hooks: WindowHooks | None = None) -> HandshakeResult:
    """Connect, send one message, get its answer, close: ``count`` times or ``seconds``."""
    deadline = time.monotonic() + seconds
    done = 0
    errors = 0
    started = 0

    async def worker() -> None:
        nonlocal done, errors, started
        while started < count and time.monotonic() < deadline:
            started += 1
            try:
                client = await connect(url)
                client.answered = asyncio.get_running_loop().create_future()
                client.send()
                await asyncio.wait_for(client.answered, 5)
                await client.close()
                done += 1
            except Exception:  # any failure is counted, never retried
                errors += 1

    if hooks:
        hooks.start()
    cpu0, t0 = time.process_time(), _now()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = _now() - t0
    cpu = time.process_time() - cpu0
    if hooks:
        hooks.stop()
    return HandshakeResult(handshakes=done, seconds=elapsed, client_cpu_s=cpu, errors=errors)


@dataclass
class HoldResult:
    requested: int
    opened: int
    connect_failures: int
    open_seconds: float
    hold_seconds: float
    drops: int
    heartbeats: int
    lateness_ms: list[float]
    client_cpu_s: float
    deflate: int = 0  # connections on which the server took permessage-deflate


async def hold_load(url: str, count: int, hold: float, interval: float, *,
                    hooks: WindowHooks | None = None, open_timeout: float = 120.0,
                    offer_deflate: bool = False) -> HoldResult:
    """Open ``count`` connections with heartbeats on, hold them ``hold`` seconds, close.

    ``offer_deflate``: the clients offer permessage-deflate (``DEFLATE_OFFER``); a server that
    takes it compresses its heartbeats, and each compressed frame counts as one.

    Heartbeat lateness is each gap between two consecutive heartbeats on one connection
    minus the interval (so it counts the server's scheduling delay, not the clock offset).
    """
    t0 = time.monotonic()
    clients, failures = await _open_many(url, count, 100, t0 + open_timeout,
                                         offer_deflate=offer_deflate)
    opened_in = time.monotonic() - t0
    for client in clients:
        client.pushes.clear()
    await asyncio.sleep(interval * 0.5)  # first beats of the last connections
    if hooks:
        hooks.start()
    cpu0 = time.process_time()
    await asyncio.sleep(hold)
    cpu = time.process_time() - cpu0
    if hooks:
        hooks.stop()
    drops = sum(1 for c in clients if c.dropped)
    lateness: list[float] = []
    beats = 0
    for client in clients:
        beats += len(client.pushes)
        times = client.pushes
        lateness.extend(((b - a) - interval) * 1000 for a, b in itertools.pairwise(times))
    await _close_all(clients)
    return HoldResult(
        requested=count, opened=len(clients), connect_failures=failures,
        open_seconds=opened_in, hold_seconds=hold, drops=drops, heartbeats=beats,
        lateness_ms=lateness, client_cpu_s=cpu, deflate=sum(c.deflate for c in clients),
    )
