"""The thin driver of one accepted WebSocket: ASGI I/O for a :class:`~service.policy.Policy`.

The rules live in the policy; the timers in the process's :class:`~service.scheduler.Scheduler`.
This module only moves events and actions between them and Granian, which shapes it
(docs/design.md):

* it never sends protocol pings and has no idle timeout, so keep-alive is an application
  ``heartbeat`` message, sent when the policy says one is due;
* it answers a client's protocol ping only while someone awaits ``receive()``, so the
  connection's own task awaits ``receive()`` for its whole life;
* ``close()`` hangs while a ``receive()`` is pending, so a close requested from outside (the
  scheduler, a shutdown, a shed) interrupts that task first, and the task itself closes;
* a close reason over 123 bytes loses the close frame (the client sees 1006), so reasons are
  truncated;
* sends are serialised by Granian itself (a lock around its sink), so a heartbeat may go out
  while a reply is being sent, and the reply path takes no lock of ours;
* it has no write timeout: a peer that stops reading pins its socket even after the app has
  returned, so a server close that cannot be delivered shuts the TCP connection down
  (:mod:`service.transport`);
* it closes the TCP connection as soon as its close frame is out, so a client still sending
  would get a reset and report 1006: the session holds the connection's descriptor across
  that close and reads to the client's close frame (:func:`service.transport.linger`);
* its ``websocket.disconnect`` carries 1005 alike for a close frame without a status, a dropped
  TCP connection and a protocol error, and never the client's close reason, so such a close is
  logged as ``closed_by: unknown``, not as the client's choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import secrets
import time
from typing import TYPE_CHECKING, Any, Protocol, cast

import msgspec

from service.codes import CloseCode
from service.diagnostics import log_event
from service.messages import Heartbeat
from service.policy import Beat, Close, Limits, Policy
from service.transport import CloseAck, Sockets, connection_pair, linger, shut_down

if TYPE_CHECKING:
    from litestar import WebSocket
    from litestar.types import WebSocketReceiveEvent, WebSocketSendEvent

    from service.registry import Registry
    from service.scheduler import Scheduler
    from service.settings import Settings


MAX_REASON_BYTES = 123
LINGER_SECONDS = 2.0
"""How long a server close waits for the client's close frame before closing TCP anyway (at
most: finding the descriptor, the close and the linger share WS_SEND_TIMEOUT, or half the
shutdown time while draining)."""
_encode = msgspec.json.Encoder().encode
_log = logging.getLogger(__name__)


def truncate_reason(reason: str) -> str:
    data = reason.encode()
    if len(data) <= MAX_REASON_BYTES:
        return reason
    return data[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


def new_client_id(prefix: str) -> str:
    return f"{prefix}_{time.time_ns() // 1_000_000}_{secrets.randbelow(100_000):05d}"


def heartbeat_phase(interval: float) -> float:
    """A connection's fixed offset on the heartbeat grid: a crowd that connected at once
    (after a deploy) does not wake at once. Below a tenth of the interval and a second."""
    return random.uniform(0.0, min(1.0, interval / 10))  # noqa: S311 - spreading, not secrecy


@functools.lru_cache(maxsize=8)
def limits_for(settings: Settings, *, periodic: bool) -> Limits:
    """The policy's numbers for an endpoint: built once, not at every handshake."""
    return Limits(
        interval=settings.ws_ping_interval, ping_timeout=settings.ws_ping_timeout,
        send_timeout=settings.ws_send_timeout, max_bytes=settings.ws_max_message_bytes,
        periodic=periodic, rate=settings.ws_rate_limit, burst=float(settings.ws_rate_burst),
    )


class Endpoint(Protocol):
    """What differs between ``/ws/echo``, ``/ws/health`` and ``/ws``."""

    path: str
    client_prefix: str
    periodic_heartbeat: bool
    """True: a heartbeat every interval. False: only after an interval with nothing sent."""

    def greeting(self, session: Session) -> msgspec.Struct | None: ...

    def handle(self, session: Session, text: str) -> msgspec.Struct | None: ...


class Session:
    """One connection from accept to close; :meth:`run` is its only task."""

    def __init__(
        self, socket: WebSocket[Any, Any, Any], endpoint: Endpoint, settings: Settings,
        *, registry: Registry, scheduler: Scheduler, sockets: Sockets,
    ) -> None:
        self.socket = socket
        self.sockets = sockets
        self.endpoint = endpoint
        self.settings = settings
        self.registry = registry
        self.scheduler = scheduler
        self.client_id = new_client_id(endpoint.client_prefix)
        self.policy = Policy(
            limits_for(settings, periodic=endpoint.periodic_heartbeat),
            now=(opened_at := time.monotonic()),  # the scheduler's clock: time.monotonic
            phase=heartbeat_phase(settings.ws_ping_interval),
        )
        self.opened_at = opened_at
        self.messages_in = 0
        self.messages_out = 0
        self.close_ack: CloseAck | None = None
        self._task: asyncio.Task[Any] | None = None
        self._beats: set[asyncio.Task[None]] = set()
        self._interrupting = False

    # --- what the endpoints and the registry read (service.registry.Member) ---------------

    @property
    def path(self) -> str:
        return self.endpoint.path

    @property
    def closed(self) -> Close | None:
        return self.policy.closed

    @property
    def age(self) -> float:
        return time.monotonic() - self.opened_at

    @property
    def ping_count(self) -> int:
        return self.policy.ping_count

    @property
    def pong_count(self) -> int:
        return self.policy.pong_count

    @property
    def closing(self) -> bool:
        return self.policy.closed is not None

    def record_pong(self) -> None:
        self.policy.pong()

    # --- requests from outside the connection's task ---------------------------------------

    def request_close(self, code: int, reason: str, *, send_frame: bool = True) -> None:
        """Ask the connection to close (shutdown, shed, a deadline); the first request wins."""
        if self.policy.closed is not None:
            return
        self.policy.close(code, truncate_reason(reason), send_frame=send_frame)
        self._interrupt()

    def _interrupt(self) -> None:
        """Cancel the connection's task out of its ``receive()`` (or send), once."""
        task = self._task
        if self._interrupting or task is None or task is asyncio.current_task() or task.done():
            return
        self._interrupting = True
        task.cancel(msg="ws-kit close requested")

    # --- the scheduler's callbacks -----------------------------------------------------------

    def on_timer(self, now: float) -> float | None:
        due_at = self.policy.next_deadline()  # a heartbeat's grid time, when one is due now
        action = self.policy.due(now)
        if isinstance(action, Beat):
            self.scheduler.lateness.observe(now - due_at)
            beat = asyncio.get_running_loop().create_task(self._send_beat(action.number))
            self._beats.add(beat)
            beat.add_done_callback(self._beats.discard)
        elif isinstance(action, Close):
            self._interrupt()
            return None
        return self.policy.next_deadline()

    def on_send_check(self, now: float) -> None:
        if self.policy.send_expired(now) is not None:
            self._interrupt()

    # --- sending ------------------------------------------------------------------------------

    async def send(self, message: msgspec.Struct) -> None:
        """Send one message; a send blocked past the send timeout drops the peer (the sweep)."""
        event: WebSocketSendEvent = {
            "type": "websocket.send", "bytes": None, "text": _encode(message).decode(),
        }
        scheduler = self.scheduler
        policy = self.policy
        policy.send_started(scheduler.now)
        scheduler.sending.add(self)
        try:
            await self.socket.send(event)
        finally:
            policy.send_finished(scheduler.now)
            if policy.send_since is None:
                scheduler.sending.discard(self)
        self.messages_out += 1

    async def _send_beat(self, number: int) -> None:
        """A heartbeat goes out from its own short task: the scheduler never waits on a peer."""
        await self.send(Heartbeat(
            ping_number=number, timestamp=time.time(),
            connection_age_seconds=round(self.age, 3), client_id=self.client_id,
        ))

    # --- the connection's task ------------------------------------------------------------------

    async def run(self) -> None:
        socket = self.socket
        await socket.accept()
        self._task = asyncio.current_task()
        self.registry.add(self)
        headers = socket.headers
        client = socket.client
        log_event(
            "connect", endpoint=self.endpoint.path, client_id=self.client_id,
            origin=headers.get("origin"), peer=f"{client.host}:{client.port}" if client else None,
            forwarded_for=headers.get("x-forwarded-for"),
        )
        try:
            if self.registry.closing:
                self.policy.close(CloseCode.GOING_AWAY, "server shutting down")
            else:
                self.scheduler.schedule(self, self.policy.next_deadline())
                greeting = self.endpoint.greeting(self)
                if greeting is not None:
                    await self.send(greeting)
                await self._receive_loop()
        except asyncio.CancelledError:
            if not self._interrupting:  # cancelled by the server itself: say goodbye, go on
                self.policy.close(CloseCode.GOING_AWAY, "server shutting down")
                await self._finish(client)
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception:
            _log.exception("connection %s failed", self.client_id)
            self.policy.close(CloseCode.INTERNAL_ERROR, "internal error")
        await self._finish(client)

    async def _close_connection(self, close: Close, client: Any) -> dict[str, str]:
        """Deliver the server's close, and end the TCP connection without a reset.

        Until its socket is really gone the peer still counts as open. Finding the
        descriptor, the close and the linger share one budget: WS_SEND_TIMEOUT, or half
        the shutdown time while draining. Returns what the close log line adds: ``tcp`` when
        the close frame could not be delivered, ``close_ack`` (how the client answered) when
        it was.
        """
        # The server's address from the scope, not PORT: a plain `granian --port` run too.
        peer = connection_pair(self.socket.scope.get("server"), self.socket.scope.get("client"))
        budget = self.settings.ws_send_timeout
        if self.registry.closing:  # leave the shutdown time to release the socket
            budget = min(budget, self.settings.ws_shutdown_timeout / 2)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        held = None
        try:
            delivered = False
            if close.send_frame:
                if peer is not None:  # before Granian's close releases its own descriptor
                    with contextlib.suppress(TimeoutError):
                        held = await asyncio.wait_for(self.sockets.hold(peer), budget / 2)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.socket.close(close.code, close.reason or ""),
                                           max(0.0, deadline - loop.time()))
                    delivered = True
            if delivered:
                if held is None:
                    return {}
                sock, held = held, None
                self.close_ack = await linger(
                    sock, min(LINGER_SECONDS, max(0.0, deadline - loop.time())))
                return {"close_ack": self.close_ack}
            if peer is None:
                return {}
            if held is None:
                held = await self.sockets.hold(peer)
            if held is None:
                return {"tcp": "gone" if self.sockets.supported else "unsupported"}
            sock, held = held, None
            shut_down(sock)
            return {"tcp": "shut_down"}
        finally:
            if held is not None:  # cancelled before handing it on
                held.close()

    async def _receive_loop(self) -> None:
        receive = self.socket.receive
        scheduler = self.scheduler
        policy = self.policy
        endpoint = self.endpoint
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                policy.disconnected(cast("dict[str, Any]", event).get("code"))
                return
            self.messages_in += 1
            text = cast("WebSocketReceiveEvent", event).get("text")
            if policy.message(scheduler.now, text) is not None:
                return
            reply = endpoint.handle(self, cast("str", text))
            if reply is not None:
                await self.send(reply)
            if policy.closed is not None:
                return

    async def _finish(self, client: Any) -> None:
        self._interrupting = True  # nothing may cancel the close itself
        self.scheduler.cancel(self)
        for beat in list(self._beats):
            beat.cancel()
        close = self.policy.closed or self.policy.close(CloseCode.GOING_AWAY,
                                                        "server shutting down")
        extra: dict[str, object] = {}
        if close.by == "server":
            extra.update(await self._close_connection(close, client))
        self.registry.discard(self)
        if close.by == "unknown":
            extra["detail"] = (
                "no status code: a close frame without one, a dropped TCP connection "
                "or a protocol error (Granian reports all three alike)"
            )
        log_event(
            "close", endpoint=self.endpoint.path, client_id=self.client_id,
            code=int(close.code), reason=close.reason, closed_by=close.by, **extra,
            duration_s=round(self.age, 3), messages_in=self.messages_in,
            messages_out=self.messages_out, heartbeats_sent=self.policy.ping_count,
            pongs_received=self.policy.pong_count,
            level=(logging.WARNING if close.code in (CloseCode.ABNORMAL, CloseCode.INTERNAL_ERROR)
                   else logging.INFO),
        )
