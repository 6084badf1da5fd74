"""uvicorn with its ``websockets-sansio`` WebSockets (``WS_SERVER=uvicorn``, the ``uvicorn``
extra): its connection adapter, and the embedded server that serves.

What uvicorn does itself that the Granian adapter has to work around: it waits for the
client's close frame after its own (10 s at most), passes the client's close reason on,
enforces ``ws_max_size`` while reading (1009 before the message is buffered whole), fails
protocol errors with 1002 and invalid UTF-8 with 1007, and negotiates permessage-deflate.
Its habits, worked around here and nowhere else:

* no write timeout: a send to a peer that stops reading waits for the transport to drain,
  and closing such a transport waits as long. A close that cannot be delivered aborts the
  connection's transport;
* the transport is not in the ASGI scope: the connection's protocol object owns the ASGI
  ``receive`` callable, and an outermost ASGI wrapper files it in the scope (exactly that
  connection; no descriptor scan);
* a send after the peer has gone raises ``ClientDisconnected``: the receive loop sees the
  disconnect, so the session lets it pass (``send_gone``);
* invalid UTF-8 is logged with a traceback at ERROR: the close line says 1007, so that record
  is dropped;
* its own protocol pings (every 20 s by default) are off: the application heartbeat is the
  contract, the same on every server;
* on shutdown it closes what is still open with 1012: the service drains with 1001 first,
  then stops the server;
* it times out only idle keep-alive connections: one that never sends its request head was
  held forever. ``HTTP_HEADER_TIMEOUT`` closes it (:class:`_H11WithHeaderTimeout`).
  ``HTTP_MAX_CONNECTIONS`` has no counterpart (uvicorn's ``limit_concurrency`` counts
  WebSockets too); the descriptor cap and nginx's per-address limits bound them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from service.connection import CloseOutcome, Disconnect, Event
from service.servers.asgi import AsgiConnection, expose_server_callables

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import Receive, Scope, Send

    from service.settings import Settings

_logger = logging.getLogger("service")


class UvicornConnection(AsgiConnection):
    __slots__ = ("_protocol",)

    unknown_close_detail = "no status code: a close frame without one, or a dropped TCP connection"

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope, receive, send)
        protocol = getattr(self.receive, "__self__", None)  # the owner of uvicorn's receive
        self._protocol = protocol if isinstance(protocol, WebSocketsSansIOProtocol) else None

    send_gone = (ClientDisconnected,)

    def disconnect(self, event: Event) -> Disconnect:
        protocol = self._protocol
        # websockets failed the connection itself (it sent its close frame, none came in)
        by_server = (protocol is not None and protocol.conn.close_sent is not None
                     and protocol.conn.close_rcvd is None)
        return Disconnect(event.get("code"), event.get("reason") or None, by_server=by_server)

    async def close(self, code: int, reason: str, *, frame: bool, budget: float) -> CloseOutcome:
        """The close frame, then uvicorn's own close handshake; or abort the transport."""
        if frame:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send_close(code, reason), budget)
                return CloseOutcome(delivered=True)
        protocol = self._protocol
        if protocol is None:
            return CloseOutcome(delivered=False, tcp="unsupported")
        if protocol.disconnected:
            return CloseOutcome(delivered=False, tcp="gone")
        protocol.transport.abort()
        return CloseOutcome(delivered=False, tcp="shut_down")


class _H11WithHeaderTimeout(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head has not arrived within
    ``header_timeout`` seconds (a silent or half-sent request)."""

    header_timeout = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_late)

    def _head_late(self) -> None:
        transport = self.transport
        # No request yet (``cycle`` is set once a head is parsed), and not upgraded since.
        if self.cycle is None and transport.get_protocol() is self and not transport.is_closing():
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)


class _Utf8Traceback(logging.Filter):
    """Drops uvicorn's traceback for invalid UTF-8 from a client: the close line says 1007."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Invalid UTF-8 sequence received")


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers (the service drains first), and with a
    ready line once it listens."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            config = self.config
            _logger.info("ready: serving on http://%s:%d", config.host, config.port)


class UvicornAdapter:
    name = "uvicorn"
    # Measured (docs/benchmarks.md, "Two servers"): 32 KiB per idle heartbeating WebSocket,
    # 72 KiB when permessage-deflate was negotiated (browsers offer it): the bound is that.
    idle_connection_bytes = 72 * 1024

    def message_buffer(self, settings: Settings) -> tuple[int, str]:
        limit = settings.ws_max_message_bytes
        return limit, f"uvicorn enforces WS_MAX_MESSAGE_BYTES={limit} while reading (1009)"

    def connect(self, scope: Scope, receive: Receive, send: Send) -> UvicornConnection:
        return UvicornConnection(scope, receive, send)

    async def serve(self, app: Litestar, settings: Settings, stop: asyncio.Event,
                    drain: Callable[[], Awaitable[None]]) -> None:
        logging.getLogger("uvicorn.error").addFilter(_Utf8Traceback())
        http = type("HeaderTimeoutH11", (_H11WithHeaderTimeout,),
                    {"header_timeout": settings.http_header_timeout})
        config = uvicorn.Config(
            expose_server_callables(app), host=settings.host, port=settings.port, http=http,
            ws="websockets-sansio", ws_max_size=settings.ws_max_message_bytes,
            ws_ping_interval=None, ws_ping_timeout=None,
            backlog=settings.listen_backlog, log_config=None, access_log=False,
            # Its per-connection INFO lines ("connection open") would double the service's own.
            log_level="debug" if settings.log_level == "debug" else "warning", lifespan="on",
            timeout_graceful_shutdown=max(1, round(settings.ws_shutdown_timeout)),
        )
        server = _Server(config)
        serving = asyncio.create_task(server.serve())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
        if serving.done():  # the server failed on its own (it logged why)
            stopping.cancel()
            serving.result()
            if not server.started:
                raise SystemExit(1)
            return
        await drain()
        server.should_exit = True
        await serving


def adapter(settings: Settings) -> UvicornAdapter:
    return UvicornAdapter()
