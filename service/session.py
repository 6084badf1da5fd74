"""The thin driver of one accepted WebSocket: a :class:`~service.policy.Policy` over a
:class:`~service.connection.Connection`.

The rules live in the policy; the timers in the process's :class:`~service.scheduler.Scheduler`;
what a server needs to keep them in its adapter (:mod:`service.servers`). This module only
moves events and actions between them:

* the connection's own task awaits ``receive()`` for its whole life (a server answers protocol
  pings only while someone reads), and it alone closes: a close requested from outside (the
  scheduler, a shutdown, a shed) interrupts that task, which then closes;
* keep-alive is an application ``heartbeat`` message, sent when the policy says one is due,
  from a short task of its own, so the scheduler never waits on a peer; sends take no lock
  of ours (the servers serialise them);
* a close reason is truncated to 123 bytes (longer ones make a close frame invalid).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import secrets
import time
from typing import TYPE_CHECKING, Any

import msgspec
from websockets.frames import EXTERNAL_CLOSE_CODES

from service.codes import CloseCode
from service.connection import CloseAck
from service.diagnostics import log_event
from service.messages import Heartbeat
from service.policy import Beat, Cause, Close, Limits, Policy

if TYPE_CHECKING:
    from service.api import Endpoint
    from service.connection import Connection
    from service.registry import Registry
    from service.scheduler import Scheduler
    from service.settings import Settings


MAX_REASON_BYTES = 123
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


class Session:
    """One connection from accept to close; :meth:`run` is its only task.

    What an endpoint's handler may use: ``client_id``, ``received_text`` (the message being
    handled, as sent), ``age``, ``ping_count``, ``pong_count``, :meth:`send` and
    :meth:`close`.
    """

    def __init__(
        self, connection: Connection, endpoint: Endpoint[Any], settings: Settings,
        *, registry: Registry, scheduler: Scheduler,
    ) -> None:
        self.connection = connection
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
        self.received_text = ""
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

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """End this connection from a handler: the close frame goes out once the handler
        returns (its reply, if any, first). ``code``: 1000, another code RFC 6455 lets an
        endpoint send, or an application's own, 3000-4999."""
        if code not in EXTERNAL_CLOSE_CODES and not 3000 <= code <= 4999:
            raise ValueError(f"close code {code} may not be sent: use 1000-1003, 1007-1014 "
                             f"or 3000-4999")
        if self.policy.closed is None:
            self.policy.close(code, truncate_reason(reason), cause="app")

    # --- requests from outside the connection's task ---------------------------------------

    def request_close(self, code: int, reason: str, cause: Cause) -> None:
        """Ask the connection to close (shutdown, shed); the first request wins."""
        if self.policy.closed is not None:
            return
        self.policy.close(code, truncate_reason(reason), cause=cause)
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
        text = _encode(message).decode()
        policy = self.policy
        policy.send_started(self.scheduler.now)
        try:
            await self.connection.send_text(text)
        except self.connection.send_gone:
            pass  # the peer has gone: the receive loop is told next
        finally:
            policy.send_finished(self.scheduler.now)
        self.messages_out += 1

    async def _send_beat(self, number: int) -> None:
        """A heartbeat goes out from its own short task: the scheduler never waits on a peer."""
        await self.send(Heartbeat(
            ping_number=number, timestamp=time.time(),
            connection_age_seconds=round(self.age, 3), client_id=self.client_id,
        ))

    # --- the connection's task ------------------------------------------------------------------

    async def run(self) -> None:
        connection = self.connection
        if not await connection.accept():
            return
        self._task = asyncio.current_task()
        self.registry.add(self)
        headers = connection.headers
        peer = connection.peer
        log_event(
            "connect", endpoint=self.endpoint.path, client_id=self.client_id,
            origin=headers.get("origin"), peer=f"{peer[0]}:{peer[1]}" if peer else None,
            forwarded_for=headers.get("x-forwarded-for"),
        )
        try:
            if self.registry.closing:
                self.policy.close(CloseCode.GOING_AWAY, "server shutting down",
                                  cause="shutdown")
            else:
                self.scheduler.schedule(self, self.policy.next_deadline())
                greeting = self.endpoint.greeting(self)
                if greeting is not None:
                    await self.send(greeting)
                await self._receive_loop()
        except asyncio.CancelledError:
            if not self._interrupting:  # cancelled by the server itself: say goodbye, go on
                self.policy.close(CloseCode.GOING_AWAY, "server shutting down",
                                  cause="shutdown")
                await self._finish()
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception:
            _log.exception("connection %s failed", self.client_id)
            self.policy.close(CloseCode.INTERNAL_ERROR, "internal error", cause="internal")
        await self._finish()

    def _close_budget(self) -> float:
        """WS_SEND_TIMEOUT for a close, or half the shutdown time while draining (the other
        half is the server's, to release the sockets)."""
        budget = self.settings.ws_send_timeout
        if self.registry.closing:
            budget = min(budget, self.settings.ws_shutdown_timeout / 2)
        return budget

    async def _receive_loop(self) -> None:
        """The per-message path: kept to what the rules need (docs/benchmarks.md, figure 5)."""
        connection = self.connection
        receive, send_text, gone = connection.receive, connection.send_text, connection.send_gone
        scheduler = self.scheduler
        policy = self.policy
        unchecked = policy.unchecked_chars
        endpoint = self.endpoint
        while True:
            event = await receive()
            text = event.get("text")
            if text is None:
                if event["type"] == "websocket.disconnect":
                    received = connection.disconnect(event)
                    policy.disconnected(received.code, received.reason,
                                        by_server=received.by_server)
                    return
                self.messages_in += 1
                policy.message(scheduler.now, None)  # a binary message: 1003
                return
            self.messages_in += 1
            policy.last_received = now = scheduler.now
            if len(text) > unchecked and policy.message(now, text) is not None:
                return
            self.received_text = text
            reply = (await endpoint.handle_async(self, text) if endpoint.is_async
                     else endpoint.handle(self, text))
            if reply is not None:
                # Timed by the sweep (Policy.reply_since): two stores, not a call, per reply.
                policy.last_sent = policy.reply_since = scheduler.now
                try:  # noqa: SIM105 - suppress() is a context manager per message
                    await send_text(_encode(reply).decode())
                except gone:
                    pass  # the peer has gone: the next receive says how
                policy.reply_since = None
                self.messages_out += 1
            if policy.closed is not None:
                return

    async def _finish(self) -> None:
        self._interrupting = True  # nothing may cancel the close itself
        self.scheduler.cancel(self)
        for beat in list(self._beats):
            beat.cancel()
        close = self.policy.closed or self.policy.close(
            CloseCode.GOING_AWAY, "server shutting down", cause="shutdown")
        extra: dict[str, object] = {}
        if close.by == "server" and close.cause != "protocol":  # else the server has closed
            outcome = await self.connection.close(
                close.code, close.reason or "", frame=close.send_frame,
                budget=self._close_budget())
            self.close_ack = outcome.ack
            extra.update(outcome.log_fields())
        self.registry.discard(self)
        if close.by == "unknown":
            extra["detail"] = self.connection.unknown_close_detail
        log_event(
            "close", endpoint=self.endpoint.path, client_id=self.client_id,
            code=int(close.code), reason=close.reason, closed_by=close.by, cause=close.cause,
            **extra,
            duration_s=round(self.age, 3), messages_in=self.messages_in,
            messages_out=self.messages_out, heartbeats_sent=self.policy.ping_count,
            pongs_received=self.policy.pong_count,
            level=(logging.WARNING
                   if close.code in (CloseCode.ABNORMAL_CLOSURE, CloseCode.INTERNAL_ERROR)
                   else logging.INFO),
        )
