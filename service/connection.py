"""What a session needs of one WebSocket, whatever server carries it.

:class:`~service.session.Session` drives the sans-I/O :class:`~service.policy.Policy` over
this interface and nothing else; each server has one adapter module in
:mod:`service.servers` that implements it and owns every workaround that server needs.
``tests/test_session.py`` drives a session over a fake one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Address = tuple[str, int]


def peer_key(host: str, port: int | str) -> Address:
    """127.0.0.1 and ::ffff:127.0.0.1 are one peer on a dual-stack socket."""
    return host.lower().removeprefix("::ffff:"), int(port)


CloseAck = Literal["frame", "eof", "reset", "timeout", "flood"]
"""How the client answered the server's close frame: its own close frame, a FIN, a reset,
nothing within the linger, or more data than a linger reads."""

Tcp = Literal["shut_down", "gone", "unsupported"]
"""What became of a TCP connection whose close frame could not be delivered."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """The peer's close, or the connection's end, as the server reported it."""

    code: int | None
    """None or 1005: no status code (a close frame without one, or a cut)."""
    reason: str | None = None
    """None: the server does not pass the client's reason on."""
    by_server: bool = False
    """The server's own protocol layer closed it (a frame it refused, a message over its
    size limit), and has sent its close frame already."""


Event = dict[str, Any]
"""One ASGI WebSocket event as the server gives it: ``text`` set for a text message, ``bytes``
for a binary one, ``type`` ``websocket.disconnect`` at the end (read by
:meth:`Connection.disconnect`). Both servers speak ASGI; passing their events on as they are
keeps a wrapper off the per-message path (docs/benchmarks.md)."""


@dataclass(frozen=True, slots=True)
class CloseOutcome:
    """What a server-side close achieved, for the close log line and ``/metrics``."""

    delivered: bool
    """The close frame went out."""
    ack: CloseAck | None = None
    """How the client answered, when the adapter can see it."""
    tcp: Tcp | None = None
    """When not delivered: what the adapter did to the TCP connection."""

    def log_fields(self) -> dict[str, str]:
        if self.ack is not None:
            return {"close_ack": self.ack}
        if self.tcp is not None:
            return {"tcp": self.tcp}
        return {}


class Connection(Protocol):
    """One accepted (or about to be accepted) WebSocket on some server."""

    headers: Mapping[str, str]
    """The handshake's headers, lower-case names."""
    peer: Address | None
    """The TCP peer as the server saw it (nginx, for a proxied client)."""
    server: object
    """The ASGI scope's ``server``: the address the server serves on, as it reports it."""
    unknown_close_detail: str
    """What a close without a status code may have been, on this server (the close log line)."""

    @property
    def receive(self) -> Callable[[], Awaitable[Event]]:
        """The next event; the server answers protocol pings meanwhile."""
    send_gone: tuple[type[Exception], ...]
    """What ``send_text`` raises when the peer has already gone: the session lets it pass,
    its ``receive`` returns the disconnect next."""

    async def accept(self) -> bool:
        """Complete the handshake; False when the client left before it finished."""

    def disconnect(self, event: Event) -> Disconnect:
        """What a ``websocket.disconnect`` event means on this server."""

    def send_text(self, text: str) -> Awaitable[None]:
        """Send one text message; may block while the peer does not read."""

    async def close(self, code: int, reason: str, *, frame: bool, budget: float) -> CloseOutcome:
        """End the connection within ``budget`` seconds: with a close frame and the close
        handshake when ``frame``, else (a peer that stopped reading) by ending the TCP
        connection so no server task waits on it. Never raises."""
