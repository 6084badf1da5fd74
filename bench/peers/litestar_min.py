"""The floor under the service with Litestar: one ``@websocket("/ws")`` handler, same reply.

Accept, then ``receive()`` raw events and ``send`` the service's ``/ws`` reply
(``bench.peers.ws_reply``) as the service sends it: no heartbeats, timers, locks, registry or
middleware, on the same embedded Granian as the service. What the service costs above this
peer is the project's own code, not Litestar's. Serves ``/ws`` only (``--ping-interval`` is
accepted and unused): it is measured in the rounds (figures 1, 3 and 4), not in figure 2.
"""

from __future__ import annotations

from typing import Any, cast

from litestar import Litestar, WebSocket, websocket
from litestar.types import WebSocketReceiveEvent, WebSocketSendEvent

from bench.peers import peer_parser
from bench.peers.ws_reply import new_client_id, reply, serve

UNSUPPORTED_DATA = 1003


@websocket("/ws")
async def ws(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    client_id = new_client_id()
    receive, send = socket.receive, socket.send
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            return
        text = cast("WebSocketReceiveEvent", event).get("text")
        if text is None:
            await socket.close(UNSUPPORTED_DATA)
            return
        answer: WebSocketSendEvent = {
            "type": "websocket.send", "bytes": None, "text": reply(client_id, text),
        }
        await send(answer)


app = Litestar(
    route_handlers=[ws], openapi_config=None, logging_config=None,
    signature_namespace={"WebSocket": WebSocket, "Any": Any},
)


def main() -> None:
    args = peer_parser(__doc__).parse_args()
    serve(app, args.port)


if __name__ == "__main__":
    main()
