"""The service's ``/ws`` reply without the service, and its embedded server: the floor peers.

``litestar-min`` and ``asgi-reply`` answer exactly as ``service.endpoints.ws_endpoint`` does,
with the service's own Structs and the same msgspec encoder and envelope decoder, and send the
text frame the same way (``websocket.send`` with the encoded message as ``text``), so the bytes
on the wire have the same shape and the per-message work differs from the service only by what
the service adds around it: sessions, heartbeat timers, the send lock and deadline, the registry
and the handshake middleware. Left out here: counting ``pong`` (it is echoed without validating
it as a ``Pong``) and the size and rate limits; the load generator never meets either.

The server is started with the service's own settings for it (``service.servers``), one server
in a stdlib asyncio loop: Granian (``service.servers.granian``) ASGI, HTTP/1 mode, the default
backlog, backpressure and header timeout, one embedded worker; or uvicorn
(``service.servers.uvicorn``) with ``ws="websockets-sansio"``, the default ``ws_max_size``
and backlog, its protocol pings off, permessage-deflate negotiated when a client offers it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import msgspec
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.embed import Server

from service.messages import Envelope, Error, ErrorCode, WsEcho, WsPong
from service.settings import Settings

CLIENT_PREFIX = "ws_client"  # ws_endpoint().client_prefix

_encode = msgspec.json.Encoder().encode
_envelope = msgspec.json.Decoder(Envelope)


def new_client_id() -> str:
    """Same shape as ``service.session.new_client_id`` (which would import Litestar)."""
    return f"{CLIENT_PREFIX}_{time.time_ns() // 1_000_000}_{secrets.randbelow(100_000):05d}"


def _error(client_id: str, code: ErrorCode, detail: str) -> str:
    return _encode(Error(error=code, detail=detail, timestamp=time.time(),
                         client_id=client_id)).decode()


def reply(client_id: str, text: str) -> str:
    """``ws_endpoint()``'s handler followed by the service's encoding of the answer."""
    started = time.perf_counter()
    try:
        message = _envelope.decode(text)
    except msgspec.ValidationError as exc:
        return _error(client_id, "invalid_message",
                      f'a message must be a JSON object with a string "type" ({exc})')
    except msgspec.DecodeError as exc:
        return _error(client_id, "invalid_json", str(exc))
    except RecursionError:
        return _error(client_id, "invalid_json", "JSON nested too deeply")
    if message.type == "ping":
        return _encode(WsPong(timestamp=time.time(), client_id=client_id)).decode()
    return _encode(WsEcho(
        data=msgspec.Raw(text), timestamp=time.time(), client_id=client_id,
        server_processing_ms=round((time.perf_counter() - started) * 1000, 3),
    )).decode()


async def reply_loop(receive: Any, send: Any) -> None:
    """One accepted connection: the /ws reply to every text frame, 1003 on a binary one, as
    the service sends them; no session around it (the floor peers' whole per-message work)."""
    client_id = new_client_id()
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            return
        text = event.get("text")
        if text is None:
            await send({"type": "websocket.close", "code": 1003, "reason": ""})  # unsupported
            return
        await send({"type": "websocket.send", "bytes": None, "text": reply(client_id, text)})


SERVERS = ("granian", "uvicorn")


def serve(app: Any, port: int, server: str = "granian") -> None:
    """Run ``app`` as the service runs its own on ``server`` (``WS_SERVER``)."""
    defaults = Settings()
    if server == "uvicorn":
        import uvicorn  # noqa: PLC0415 - the uvicorn extra, needed only here

        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, ws="websockets-sansio",
            ws_max_size=defaults.ws_max_message_bytes, ws_ping_interval=None,
            ws_ping_timeout=None, backlog=defaults.listen_backlog, log_config=None,
            access_log=False, log_level="warning", lifespan="on",
        )
        asyncio.run(uvicorn.Server(config).serve())
        return
    granian = Server(
        app, address="127.0.0.1", port=port, interface=Interfaces.ASGI,
        http=HTTPModes.http1, backlog=defaults.listen_backlog,
        backpressure=defaults.http_max_connections,
        http1_settings=HTTP1Settings(
            header_read_timeout=max(1, round(defaults.http_header_timeout * 1000))
        ),
        log_level=LogLevels.warning, log_access=False,
    )
    asyncio.run(granian.serve())
