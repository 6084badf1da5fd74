"""What every server's connection shares: the WebSocket's raw ASGI events.

A message passes no framework wrapper between the server and the session. The endpoints are
Litestar ``@asgi`` routes (Litestar's ``WebSocket`` wraps ``receive`` and ``send``), and the
server's own callables are filed in the scope before Litestar's exception middleware wraps
``send`` (:func:`expose_server_callables`, which each adapter's ``serve`` puts outermost; a
plain ``granian`` run has no such wrapper and goes through Litestar's). Measured on ``/ws``
(docs/benchmarks.md): the wrappers cost more per message than everything the session adds.

An adapter subclasses :class:`AsgiConnection` and adds what its server needs: how a
disconnect is read (:meth:`AsgiConnection.disconnect`), what its send raises for a peer that
has gone, and its close. ``receive`` is the server's own, and ``send_text`` returns the
server's own awaitable: no coroutine of ours per message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from litestar.datastructures import Headers
from litestar.enums import ScopeType

from service.connection import Disconnect, Event, peer_key

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from litestar.types import ASGIApp, Receive, Scope, Send

SERVER_CALLABLES = "ws_kit.server_callables"
"""The scope key under which the server's own ``(receive, send)`` are filed."""


def expose_server_callables(app: ASGIApp) -> ASGIApp:
    """``app``, filing each WebSocket's ``(receive, send)`` in its scope as the server gave
    them; put outermost, around the Litestar app."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.WEBSOCKET:
            cast("dict[str, Any]", scope)[SERVER_CALLABLES] = (receive, send)
        await app(scope, receive, send)

    return asgi


class AsgiConnection:
    __slots__ = ("_send", "headers", "peer", "receive", "scope", "server")

    send_gone: tuple[type[Exception], ...] = ()

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        receive, send = cast("dict[str, Any]", scope).get(SERVER_CALLABLES, (receive, send))
        self.scope = scope
        self.headers = Headers.from_scope(scope)
        self.server = scope.get("server")
        client = scope.get("client")
        self.peer = peer_key(*client[:2]) if client else None
        # Litestar types events as TypedDicts; the session reads them as plain dicts.
        self.receive = cast("Callable[[], Awaitable[Event]]", receive)
        self._send = send

    async def accept(self) -> bool:
        if (await self.receive())["type"] != "websocket.connect":
            return False  # gone before the handshake finished
        await self._send({"type": "websocket.accept", "subprotocol": None, "headers": []})
        return True

    def disconnect(self, event: Event) -> Disconnect:
        """The ``websocket.disconnect`` event as a :class:`Disconnect`."""
        return Disconnect(event.get("code"), event.get("reason") or None)

    def send_text(self, text: str) -> Awaitable[None]:
        # The server's own send, returned, not awaited here: one coroutine frame less.
        return self._send({"type": "websocket.send", "bytes": None, "text": text})

    def send_close(self, code: int, reason: str) -> Awaitable[None]:
        return self._send({"type": "websocket.close", "code": code, "reason": reason})
