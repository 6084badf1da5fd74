"""The floor under the service without a framework: raw ASGI, same /ws reply, on either server.

One coroutine per connection: accept, then for every text frame the service's ``/ws`` reply
(``bench.peers.ws_reply``), sent as the service sends it. No heartbeats, timers, locks or
registry on ``/ws``: it is measured in the rounds (figures 1, 3 and 4). ``/ws/health`` sends a
``heartbeat`` every ``--ping-interval`` and ignores what it receives, for figure 2 (memory per
idle connection). ``--server`` picks the embedded server as ``WS_SERVER`` does for the service:
``granian`` (the default) or ``uvicorn`` (``ws="websockets-sansio"``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.peers import asgi_heartbeats, asgi_websocket_connect, peer_parser
from bench.peers.ws_reply import SERVERS, reply_loop, serve

INTERVAL = 30.0


async def _health(receive: Any, send: Any) -> None:
    await send({"type": "websocket.accept"})
    beat = asyncio.create_task(asgi_heartbeats(send, time.monotonic(), INTERVAL))
    try:
        while (await receive())["type"] != "websocket.disconnect":
            pass
    finally:
        beat.cancel()


async def app(scope: Any, receive: Any, send: Any) -> None:
    if not await asgi_websocket_connect(scope, receive, send):
        return
    if scope["path"] == "/ws/health":
        await _health(receive, send)
        return
    if scope["path"] != "/ws":
        await send({"type": "websocket.close", "code": 1000})  # before accept: a 403
        return
    await send({"type": "websocket.accept"})
    await reply_loop(receive, send)


def main() -> None:
    global INTERVAL  # noqa: PLW0603 - one process, one setting
    parser = peer_parser(__doc__)
    parser.add_argument("--server", choices=SERVERS, default="granian")
    args = parser.parse_args()
    INTERVAL = args.ping_interval
    serve(app, args.port, args.server)


if __name__ == "__main__":
    main()
