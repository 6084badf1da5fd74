"""The service without its session: a peer that lacks just that part.

The kit's whole app (the ``WsKit`` plugin, its middleware, a raw ASGI route over the server's
own ``receive``/``send``, a task per connection), served by ``ws-service`` as the service is
(``WS_APP=bench.peers.kit_raw:create_app``), with one more route, ``/ws/raw``, whose loop sends
the service's ``/ws`` reply (``bench.peers.ws_reply``) with no session around it: no
heartbeat, no limits, no send deadline, no typed decode, no counters. The service ÷ this peer
is what the session costs per message; this peer ÷ ``asgi-reply`` is what the app around it
costs (docs/benchmarks.md, figure 5).
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Litestar, asgi

from bench.peers.ws_reply import reply_loop
from service.plugin import WsKit
from service.servers.asgi import SERVER_CALLABLES
from service.settings import Settings


@asgi("/ws/raw", is_mount=False, copy_scope=False)
async def raw(scope: Any, receive: Any, send: Any) -> None:
    receive, send = scope.get(SERVER_CALLABLES, (receive, send))
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
    await asyncio.get_running_loop().create_task(reply_loop(receive, send))


def create_app(settings: Settings | None = None) -> Litestar:
    return Litestar(route_handlers=[raw], plugins=[WsKit(settings)], openapi_config=None,
                    logging_config=None)
