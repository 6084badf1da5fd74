"""What every server's connection shares: Litestar's WebSocket and its ASGI events.

An adapter subclasses :class:`AsgiConnection` and adds what its server needs: how a
disconnect is read (:meth:`AsgiConnection.disconnect`), and its close.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from service.connection import Disconnect, Received, peer_key

if TYPE_CHECKING:
    from litestar import WebSocket
    from litestar.types import WebSocketReceiveEvent, WebSocketSendEvent


class AsgiConnection:
    __slots__ = ("_receive", "_send", "_socket", "headers", "peer", "server")

    def __init__(self, socket: WebSocket[Any, Any, Any]) -> None:
        self._socket = socket
        scope = socket.scope
        self.headers = socket.headers
        self.server = scope.get("server")
        client = scope.get("client")
        self.peer = peer_key(*client[:2]) if client else None
        self._receive = socket.receive
        self._send = socket.send

    async def accept(self) -> None:
        await self._socket.accept()

    def disconnect(self, event: dict[str, Any]) -> Disconnect:
        """The ``websocket.disconnect`` event as a :class:`Disconnect`."""
        return Disconnect(event.get("code"), event.get("reason") or None)

    async def receive(self) -> Received:
        event = await self._receive()
        if event["type"] == "websocket.disconnect":
            return self.disconnect(cast("dict[str, Any]", event))
        event = cast("WebSocketReceiveEvent", event)
        text = event.get("text")
        return text if text is not None else (event.get("bytes") or b"")

    async def send_text(self, text: str) -> None:
        event: WebSocketSendEvent = {"type": "websocket.send", "bytes": None, "text": text}
        await self._send(event)
