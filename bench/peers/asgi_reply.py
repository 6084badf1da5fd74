"""The floor under the service without a framework: raw ASGI on embedded Granian, same /ws reply.

One coroutine per connection: accept, then for every text frame the service's ``/ws`` reply
(``bench.peers.ws_reply``), sent as the service sends it. No heartbeats, timers, locks or
registry. Serves ``/ws`` only (``--ping-interval`` is accepted and unused): it is measured in
the rounds (figures 1, 3 and 4), not in figure 2.
"""

from __future__ import annotations

from typing import Any

from bench.peers import peer_parser
from bench.peers.ws_reply import new_client_id, reply, serve

UNSUPPORTED_DATA = 1003


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"no\n"})
        return
    await receive()  # websocket.connect
    if scope["path"] != "/ws":
        await send({"type": "websocket.close", "code": 1000})  # before accept: a 403
        return
    await send({"type": "websocket.accept"})
    client_id = new_client_id()
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            return
        text = event.get("text")
        if text is None:
            await send({"type": "websocket.close", "code": UNSUPPORTED_DATA})
            return
        await send({"type": "websocket.send", "bytes": None, "text": reply(client_id, text)})


def main() -> None:
    args = peer_parser(__doc__).parse_args()
    serve(app, args.port)


if __name__ == "__main__":
    main()
