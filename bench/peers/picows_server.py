"""picows echo server (C-accelerated asyncio WebSocket): the ceiling for Python.

``/ws`` echoes each text frame; ``/ws/health`` also sends a ``heartbeat`` every interval,
the same message the service sends, scheduled with ``loop.call_later``.
"""

from __future__ import annotations

import asyncio
import time

from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from bench.peers import heartbeat_text, peer_parser

INTERVAL = 30.0


class Echo(WSListener):
    def __init__(self, heartbeats: bool) -> None:
        self.heartbeats = heartbeats
        self.transport: WSTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.opened = 0.0
        self.beats = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.opened = time.monotonic()
        if self.heartbeats:
            self.timer = asyncio.get_running_loop().call_later(INTERVAL, self.beat)

    def beat(self) -> None:
        if self.transport is None:
            return
        self.beats += 1
        text = heartbeat_text(self.beats, time.time(), time.monotonic() - self.opened)
        self.transport.send(WSMsgType.TEXT, text.encode())
        self.timer = asyncio.get_running_loop().call_later(INTERVAL, self.beat)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            transport.send(WSMsgType.TEXT, frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()


def _listener(request: WSUpgradeRequest) -> Echo | None:
    if request.path == b"/ws":
        return Echo(heartbeats=False)
    if request.path == b"/ws/health":
        return Echo(heartbeats=True)
    return None


async def _serve(port: int) -> None:
    server = await ws_create_server(_listener, "127.0.0.1", port, backlog=128)
    async with server:
        await server.serve_forever()


def main() -> None:
    global INTERVAL  # noqa: PLW0603 - one process, one setting
    args = peer_parser(__doc__).parse_args()
    INTERVAL = args.ping_interval
    asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
