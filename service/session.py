"""One accepted WebSocket: its identity, counters, heartbeats, timeouts and close.

Granian shapes this module (see docs/design.md):

* it never sends protocol pings and has no idle timeout, so keep-alive is an application
  ``heartbeat`` message sent by :meth:`Session._heartbeat_loop`;
* it answers a client's protocol ping only while someone awaits ``receive()``, so a receive
  loop runs for the whole life of every connection;
* ``close()`` hangs while another task awaits ``receive()``, so every close goes through
  :meth:`Session.request_close` and is sent by :meth:`Session.run` after the receive loop has
  been cancelled;
* a close reason over 123 bytes loses the close frame (the client sees 1006), so reasons are
  truncated;
* it has no write timeout: a peer that stops reading pins its socket even after the app has
  returned, so a server close that cannot be delivered shuts the TCP connection down
  (:mod:`service.transport`);
* its ``websocket.disconnect`` carries 1005 alike for a close frame without a status, a dropped
  TCP connection and a protocol error, and never the client's close reason, so such a close is
  logged as ``closed_by: unknown``, not as the client's choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any, Protocol, cast

import msgspec

from service.diagnostics import log_event
from service.messages import Heartbeat
from service.transport import shutdown_connection

if TYPE_CHECKING:
    from litestar import WebSocket
    from litestar.types import WebSocketReceiveEvent, WebSocketSendEvent

    from service.registry import Registry
    from service.settings import Settings

# RFC 6455 section 7.4.1 close codes this service sends.
NORMAL = 1000
GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003
NO_STATUS = 1005
POLICY_VIOLATION = 1008
ABNORMAL = 1006
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011

MAX_REASON_BYTES = 123
_encode = msgspec.json.Encoder().encode


def truncate_reason(reason: str) -> str:
    data = reason.encode()
    if len(data) <= MAX_REASON_BYTES:
        return reason
    return data[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


def new_client_id(prefix: str) -> str:
    return f"{prefix}_{time.time_ns() // 1_000_000}_{secrets.randbelow(100_000):05d}"


class Endpoint(Protocol):
    """What differs between ``/ws/echo``, ``/ws/health`` and ``/ws``."""

    path: str
    client_prefix: str
    periodic_heartbeat: bool
    """True: a heartbeat every interval. False: only after an interval with nothing sent."""

    def greeting(self, session: Session) -> msgspec.Struct | None: ...

    def handle(self, session: Session, text: str, received_at: float) -> msgspec.Struct | None: ...


class _Close(msgspec.Struct, frozen=True):
    code: int
    reason: str | None  # None: the client's reason is not known (Granian does not pass it on)
    by: str  # "server", "client" (a close frame with a status) or "unknown" (1005)
    send_frame: bool = True


class Session:
    """State and lifecycle of one connection; ``run`` owns it from accept to close."""

    def __init__(
        self, socket: WebSocket[Any, Any, Any], endpoint: Endpoint, settings: Settings,
        registry: Registry,
    ) -> None:
        self.socket = socket
        self.endpoint = endpoint
        self.settings = settings
        self.registry = registry
        self.client_id = new_client_id(endpoint.client_prefix)
        self.opened_at = time.monotonic()
        self.last_sent = self.opened_at
        self.last_received = self.opened_at
        self.ping_count = 0
        self.pong_count = 0
        self.messages_in = 0
        self.messages_out = 0
        self._send_lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        self._closed: asyncio.Future[_Close] = self._loop.create_future()

    @property
    def age(self) -> float:
        return time.monotonic() - self.opened_at

    @property
    def closing(self) -> bool:
        return self._closed.done()

    @property
    def pong_aware(self) -> bool:
        """A client that has answered a heartbeat once is expected to keep answering them."""
        return self.pong_count > 0

    def request_close(self, code: int, reason: str | None, *, by: str = "server",
                      send_frame: bool = True) -> None:
        """Ask ``run`` to end the connection; the first request wins."""
        if not self._closed.done():
            if reason is not None:
                reason = truncate_reason(reason)
            self._closed.set_result(_Close(code, reason, by, send_frame))

    def record_pong(self) -> None:
        self.pong_count += 1

    def _send_expired(self) -> None:
        self.request_close(
            ABNORMAL, f"send blocked for {self.settings.send_timeout:g}s: peer not reading",
            send_frame=False,
        )

    async def send(self, message: msgspec.Struct) -> bool:
        """Send one message; a send that blocks past the send timeout drops the peer.

        The deadline is a plain timer that asks ``run`` to cancel us, not ``wait_for``: a task
        per message cost 15-20% of the service's CPU (docs/benchmarks.md).
        """
        event: WebSocketSendEvent = {
            "type": "websocket.send", "bytes": None, "text": _encode(message).decode(),
        }
        expiry = self._loop.call_later(self.settings.send_timeout, self._send_expired)
        try:
            async with self._send_lock:
                await self.socket.send(event)
        except Exception:  # the transport is gone; the receive loop reports how
            self.request_close(ABNORMAL, "send failed: connection lost", by="unknown",
                               send_frame=False)
            return False
        finally:
            expiry.cancel()
        self.messages_out += 1
        self.last_sent = time.monotonic()
        return True

    async def run(self) -> None:
        socket = self.socket
        await socket.accept()
        self.registry.add(self)
        headers = socket.headers
        client = socket.client
        log_event(
            "connect", endpoint=self.endpoint.path, client_id=self.client_id,
            origin=headers.get("origin"), peer=f"{client.host}:{client.port}" if client else None,
            forwarded_for=headers.get("x-forwarded-for"),
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            if self.registry.closing:
                self.request_close(GOING_AWAY, "server shutting down")
            else:
                greeting = self.endpoint.greeting(self)
                if greeting is not None:
                    await self.send(greeting)
                tasks = [
                    asyncio.create_task(self._receive_loop()),
                    asyncio.create_task(self._heartbeat_loop()),
                ]
                waiters: list[asyncio.Future[Any]] = [self._closed, *tasks]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        logging.getLogger(__name__).error(
                            "connection %s failed", self.client_id, exc_info=task.exception()
                        )
                        self.request_close(INTERNAL_ERROR, "internal error")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.request_close(GOING_AWAY, "server shutting down")  # cancelled from outside
            close = self._closed.result()
            released = None
            if close.by == "server":
                delivered = False
                if close.send_frame:
                    limit = self.settings.send_timeout
                    if self.registry.closing:  # leave the shutdown time to release the socket
                        limit = min(limit, self.settings.ws_shutdown_timeout / 2)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(socket.close(close.code, close.reason or ""), limit)
                        delivered = True
                if not delivered and client is not None:
                    # Until its socket is really gone the peer still counts as open.
                    released = await asyncio.to_thread(
                        shutdown_connection, self.settings.port, (client.host, client.port)
                    )
            self.registry.discard(self)
            extra: dict[str, object] = {} if released is None else {"tcp": released}
            if close.by == "unknown" and close.code == NO_STATUS:
                extra["detail"] = (
                    "no status code: a close frame without one, a dropped TCP connection "
                    "or a protocol error (Granian reports all three alike)"
                )
            log_event(
                "close", endpoint=self.endpoint.path, client_id=self.client_id,
                code=close.code, reason=close.reason, closed_by=close.by, **extra,
                duration_s=round(self.age, 3), messages_in=self.messages_in,
                messages_out=self.messages_out, heartbeats_sent=self.ping_count,
                pongs_received=self.pong_count,
                level=logging.WARNING if close.code in (ABNORMAL, INTERNAL_ERROR) else logging.INFO,
            )

    async def _receive_loop(self) -> None:
        receive = self.socket.receive
        limit = self.settings.ws_max_message_bytes
        rate = self.settings.ws_rate_limit
        burst = float(self.settings.rate_burst)
        tokens, refilled = burst, time.monotonic()  # token bucket for WS_RATE_LIMIT
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                gone = cast("dict[str, Any]", event)
                code = gone.get("code") or NO_STATUS
                self.request_close(code, gone.get("reason") or None,
                                   by="unknown" if code == NO_STATUS else "client")
                return
            received_at = time.time()
            self.last_received = now = time.monotonic()
            self.messages_in += 1
            if rate:
                tokens = min(burst, tokens + (now - refilled) * rate)
                refilled = now
                if tokens < 1:
                    self.request_close(
                        POLICY_VIOLATION, f"rate limit: over WS_RATE_LIMIT={rate:g} messages/s"
                    )
                    return
                tokens -= 1
            text = cast("WebSocketReceiveEvent", event).get("text")
            if text is None:
                self.request_close(UNSUPPORTED_DATA, "binary frames are unsupported; use text")
                return
            # len() counts characters; encode only when the UTF-8 size could exceed the limit.
            if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
                self.request_close(
                    MESSAGE_TOO_BIG, f"message exceeds WS_MAX_MESSAGE_BYTES={limit}"
                )
                return
            reply = self.endpoint.handle(self, text, received_at)
            if reply is not None and not await self.send(reply):
                return

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.ws_ping_interval
        timeout = self.settings.ping_timeout
        periodic = self.endpoint.periodic_heartbeat
        next_beat = self.opened_at + interval
        while True:
            await asyncio.sleep(max(0.0, next_beat - time.monotonic()))
            if not periodic and time.monotonic() - self.last_sent < interval:
                next_beat = self.last_sent + interval  # something else kept the line busy
                continue
            self.ping_count += 1
            sent_at = time.monotonic()
            beat = Heartbeat(
                ping_number=self.ping_count, timestamp=time.time(),
                connection_age_seconds=round(sent_at - self.opened_at, 3),
                client_id=self.client_id,
            )
            if not await self.send(beat):
                return
            # On a fixed grid: a late wake-up does not push later beats back.
            next_beat += interval
            if next_beat <= time.monotonic():
                next_beat = time.monotonic() + interval
            if self.pong_aware:
                await asyncio.sleep(timeout)
                if self.last_received < sent_at:
                    self.request_close(
                        INTERNAL_ERROR,
                        f"heartbeat timeout: no pong within WS_PING_TIMEOUT={timeout:g}s",
                    )
                    return
