"""Granian (the default server): its connection adapter, and the embedded server that serves.

Granian 2.8's WebSocket habits, each worked around here and nowhere else (upstream reports:
docs/conformance.md):

* ``close()`` hangs while a ``receive()`` is pending; the session's one-task design (a close
  from outside interrupts the task, the task closes) never has both at once;
* a close reason over 123 bytes loses the close frame (the client sees 1006): reasons are
  truncated by the session, for every server;
* it has no write timeout, and it closes TCP as soon as its close frame is out without
  waiting for the client's (a client still sending gets a reset and reports 1006): the
  connection's descriptor is held across that close (:mod:`service.servers.granian_tcp`), to
  linger to the client's close frame, or to shut a never-reading peer's connection down;
* its ``websocket.disconnect`` carries 1005 alike for a close frame without a status, a
  dropped TCP connection and a protocol error, and never the client's close reason;
* on SIGTERM it drops every WebSocket without a close frame (emmett-framework/granian#796):
  the service drains with 1001 first, then stops the embedded server;
* its Rust threads may still run at interpreter teardown, which aborts now and then (exit
  134): the process leaves with ``os._exit`` once every client has had its 1001;
* its worker binds after its own start-up logs: "ready" waits until the port accepts;
* it buffers up to 64 MiB of one message before the app sees it (stated at start-up,
  ``service.limits``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.embed import Server

from service.connection import CloseOutcome
from service.servers.asgi import AsgiConnection, expose_server_callables
from service.servers.granian_tcp import Sockets, connection_pair, linger, shut_down

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import Receive, Scope, Send

    from service.settings import Settings

LINGER_SECONDS = 2.0
"""How long a server close waits for the client's close frame before closing TCP anyway (at
most: finding the descriptor, the close and the linger share the close's budget)."""

_logger = logging.getLogger("service")


class GranianConnection(AsgiConnection):
    __slots__ = ("_pair", "_sockets")

    unknown_close_detail = (
        "no status code: a close frame without one, a dropped TCP connection "
        "or a protocol error (Granian reports all three alike)"
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send, sockets: Sockets) -> None:
        super().__init__(scope, receive, send)
        self._sockets = sockets
        # The server's address from the scope, not PORT: a plain `granian --port` run too.
        self._pair = connection_pair(self.server, scope.get("client"))

    async def close(self, code: int, reason: str, *, frame: bool, budget: float) -> CloseOutcome:
        """Deliver the close, and end the TCP connection without a reset.

        Until its socket is really gone the peer still counts as open. Finding the
        descriptor, the close and the linger share ``budget``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        pair, sockets = self._pair, self._sockets
        held = None
        try:
            delivered = False
            if frame:
                if pair is not None:  # before Granian's close releases its own descriptor
                    with contextlib.suppress(TimeoutError):
                        held = await asyncio.wait_for(sockets.hold(pair), budget / 2)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.send_close(code, reason),
                                           max(0.0, deadline - loop.time()))
                    delivered = True
            if delivered:
                if held is None:
                    return CloseOutcome(delivered=True)
                sock, held = held, None
                ack = await linger(sock, min(LINGER_SECONDS, max(0.0, deadline - loop.time())))
                return CloseOutcome(delivered=True, ack=ack)
            if pair is None:
                return CloseOutcome(delivered=False)
            if held is None:
                held = await sockets.hold(pair)
            if held is None:
                return CloseOutcome(delivered=False,
                                    tcp="gone" if sockets.supported else "unsupported")
            sock, held = held, None
            shut_down(sock)
            return CloseOutcome(delivered=False, tcp="shut_down")
        finally:
            if held is not None:  # cancelled before handing it on
                held.close()


async def _announce_ready(settings: Settings) -> None:
    """Log "ready" once the port accepts connections: Granian's worker binds after its logs."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    while True:
        try:
            _, writer = await asyncio.open_connection(host, settings.port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        _logger.info("ready: serving on http://%s:%d", settings.host, settings.port)
        return


MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""What Granian buffers of one message at most (tungstenite's defaults; no option changes it)."""


class GranianAdapter:
    name = "granian"
    # Measured: an idle heartbeating WebSocket costs 158-161 KiB of RSS (docs/benchmarks.md,
    # "Two servers").
    idle_connection_bytes = 160 * 1024

    def message_buffer(self, settings: Settings) -> tuple[int, str]:
        return MAX_MESSAGE_BYTES, (
            f"Granian's fixed 64 MiB message limit; WS_MAX_MESSAGE_BYTES="
            f"{settings.ws_max_message_bytes} applies once it has arrived")

    def __init__(self) -> None:
        self._sockets = Sockets()  # one per process: its scans serve every connection

    def connect(self, scope: Scope, receive: Receive, send: Send) -> GranianConnection:
        return GranianConnection(scope, receive, send, self._sockets)

    async def serve(self, app: Litestar, settings: Settings, stop: asyncio.Event,
                    drain: Callable[[], Awaitable[None]]) -> None:
        # The accept path (docs/design.md): Granian holds one of `backpressure` slots for every
        # connection that has not finished a request (WebSockets leave the pool once upgraded),
        # and only its HTTP/1 mode times out a connection that sends nothing; `auto` mode's
        # HTTP/2 sniffing waits forever, so 128 silent sockets used to lock everyone out.
        server = Server(
            expose_server_callables(app), address=settings.host, port=settings.port,
            interface=Interfaces.ASGI,
            http=HTTPModes.http1, backlog=settings.listen_backlog,
            backpressure=settings.http_max_connections,
            http1_settings=HTTP1Settings(
                header_read_timeout=max(1, round(settings.http_header_timeout * 1000))
            ),
            log_level=LogLevels(settings.log_level), log_access=False,
        )
        serving = asyncio.create_task(server.serve())
        stopping = asyncio.create_task(stop.wait())
        ready = asyncio.create_task(_announce_ready(settings))
        await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if serving.done():  # the server failed on its own
            stopping.cancel()
            serving.result()
            return
        await drain()
        server.stop()  # type: ignore[no-untyped-call]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(serving, settings.ws_shutdown_timeout)
        logging.shutdown()
        os._exit(0)


def adapter(settings: Settings) -> GranianAdapter:
    return GranianAdapter()
