"""Raw echo on embedded Granian, without a framework: the ceiling of the service's server.

``--interface rsgi`` uses Granian's native protocol; ``--interface asgi`` the ASGI one the
service runs on (the gap between the two is Granian's ASGI layer; the gap between ASGI raw
and the service is Litestar's and the project's). Same process model as ``ws-service``:
one embedded Granian server in a stdlib asyncio loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from granian.constants import Interfaces
from granian.log import LogLevels
from granian.rsgi import WebsocketMessageType
from granian.server.embed import Server

from bench.peers import asgi_heartbeats, asgi_websocket_connect, heartbeat_text, peer_parser

INTERVAL = 30.0


async def _beat_rsgi(transport: Any, opened: float) -> None:
    number = 0
    while True:
        await asyncio.sleep(INTERVAL)
        number += 1
        await transport.send_str(heartbeat_text(number, time.time(), time.monotonic() - opened))


async def rsgi_app(scope: Any, protocol: Any) -> None:
    if scope.proto != "ws":
        await_response = protocol.response_str(404, [("content-type", "text/plain")], "no\n")
        if await_response is not None:
            await await_response
        return
    transport = await protocol.accept()
    beat = None
    if scope.path == "/ws/health":
        beat = asyncio.create_task(_beat_rsgi(transport, time.monotonic()))
    receive, send = transport.receive, transport.send_str
    try:
        while True:
            message = await receive()
            if message.kind == WebsocketMessageType.close:
                break
            if message.kind == WebsocketMessageType.string:
                await send(message.data)
    finally:
        if beat is not None:
            beat.cancel()
    protocol.close(1000)


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    if not await asgi_websocket_connect(scope, receive, send):
        return
    await send({"type": "websocket.accept"})
    beat = None
    if scope["path"] == "/ws/health":
        beat = asyncio.create_task(asgi_heartbeats(send, time.monotonic(), INTERVAL))
    try:
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                break
            text = event.get("text")
            if text is not None:
                await send({"type": "websocket.send", "text": text})
    finally:
        if beat is not None:
            beat.cancel()


async def _serve(port: int, interface: str) -> None:
    rsgi = interface == "rsgi"
    server = Server(
        rsgi_app if rsgi else asgi_app, address="127.0.0.1", port=port,
        interface=Interfaces.RSGI if rsgi else Interfaces.ASGI,
        log_level=LogLevels.warning, log_access=False,
    )
    await server.serve()


def main() -> None:
    global INTERVAL  # noqa: PLW0603 - one process, one setting
    parser = peer_parser(__doc__)
    parser.add_argument("--interface", choices=("rsgi", "asgi"), default="rsgi")
    args = parser.parse_args()
    INTERVAL = args.ping_interval
    asyncio.run(_serve(args.port, args.interface))


if __name__ == "__main__":
    main()
