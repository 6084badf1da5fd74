"""Peer servers for the benchmark, each one process, run as ``python -m bench.peers.NAME``.

Every peer takes ``--port`` and ``--ping-interval``. The echo peers serve ``/ws`` (echo) and
``/ws/health`` (a ``heartbeat`` message every interval, the service's equivalent); the floor
peers (``litestar_min``, ``asgi_reply``, see ``ws_reply``) serve ``/ws`` with the service's own
``/ws`` reply (``asgi_reply`` serves ``/ws/health`` too, for figure 2).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any


def peer_parser(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ping-interval", type=float, default=30.0)
    return parser


def heartbeat_text(number: int, timestamp: float, age: float) -> str:
    """The heartbeat the raw peers send: same fields as the service's ``Heartbeat``."""
    return (
        f'{{"type":"heartbeat","ping_number":{number},"timestamp":{timestamp},'
        f'"connection_age_seconds":{round(age, 3)},"client_id":"peer"}}'
    )


async def asgi_websocket_connect(scope: Any, receive: Any, send: Any) -> bool:
    """What the raw ASGI peers do before their own part: answer ``lifespan`` until shutdown,
    answer HTTP with a 404, and for a WebSocket receive its ``websocket.connect``.

    True when the scope is a WebSocket whose connect event has been received.
    """
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return False
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"no\n"})
        return False
    await receive()  # websocket.connect
    return True


async def asgi_heartbeats(send: Any, opened: float, interval: float) -> None:
    """A raw ASGI peer's ``/ws/health``: a ``heartbeat`` every ``interval`` until cancelled."""
    number = 0
    while True:
        await asyncio.sleep(interval)
        number += 1
        text = heartbeat_text(number, time.time(), time.monotonic() - opened)
        await send({"type": "websocket.send", "text": text})
