"""The service's contract on Starlette + uvicorn: what a FastAPI user would pick.

Same wire Structs as the service (``service.messages``): ``/ws`` answers ``ping`` with
``pong`` and echoes anything else under ``data``; ``/ws/echo`` greets with ``welcome`` and
echoes under ``original``; ``/ws/health`` greets and sends a ``heartbeat`` every interval.
Idle heartbeats on ``/ws`` and ``/ws/echo`` as in the service. What it leaves out: the
per-connection diagnostics log lines, origin/token checks, send timeouts and the message-size
limit (so it does a little less work per message than the service).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bench.peers import peer_parser
from service.messages import (
    Echo,
    Envelope,
    Error,
    HealthStatus,
    Heartbeat,
    LatencyInfo,
    PingConfig,
    Welcome,
    WsEcho,
    WsPong,
)

_encode = msgspec.json.Encoder().encode
_envelope = msgspec.json.Decoder(Envelope)
INTERVAL = 30.0


class _Conn:
    def __init__(self, socket: WebSocket, prefix: str) -> None:
        self.socket = socket
        self.client_id = f"{prefix}_{time.time_ns() // 1_000_000}"
        self.opened = time.monotonic()
        self.last_sent = self.opened
        self.beats = 0

    async def send(self, message: msgspec.Struct) -> None:
        await self.socket.send_text(_encode(message).decode())
        self.last_sent = time.monotonic()

    async def heartbeats(self, periodic: bool) -> None:
        next_beat = self.opened + INTERVAL
        while True:
            await asyncio.sleep(max(0.0, next_beat - time.monotonic()))
            if not periodic and time.monotonic() - self.last_sent < INTERVAL:
                next_beat = self.last_sent + INTERVAL
                continue
            self.beats += 1
            sent_at = time.monotonic()
            await self.send(Heartbeat(
                ping_number=self.beats, timestamp=time.time(),
                connection_age_seconds=round(sent_at - self.opened, 3), client_id=self.client_id,
            ))
            next_beat = sent_at + INTERVAL

    def error(self, detail: str) -> Error:
        return Error(error="invalid_json", detail=detail, timestamp=time.time(),
                     client_id=self.client_id)


def _decoded(conn: _Conn, text: str) -> Envelope | Error | None:
    """The envelope to answer, the ``invalid_json`` error to answer with, or None for a
    ``pong`` (never answered)."""
    try:
        message = _envelope.decode(text)
    except msgspec.DecodeError as exc:
        return conn.error(str(exc))
    return None if message.type == "pong" else message


def _reply_ws(conn: _Conn, text: str) -> msgspec.Struct | None:
    started = time.perf_counter()
    message = _decoded(conn, text)
    if message is None or isinstance(message, Error):
        return message
    if message.type == "ping":
        return WsPong(timestamp=time.time(), client_id=conn.client_id)
    return WsEcho(
        data=msgspec.Raw(text), timestamp=time.time(), client_id=conn.client_id,
        server_processing_ms=round((time.perf_counter() - started) * 1000, 3),
    )


def _reply_echo(conn: _Conn, text: str) -> msgspec.Struct | None:
    received_at = time.time()
    message = _decoded(conn, text)
    if message is None or isinstance(message, Error):
        return message
    return Echo(
        original=msgspec.Raw(text), server_timestamp=time.time(), client_id=conn.client_id,
        latency_info=LatencyInfo(
            received_at=received_at,
            connection_age_ms=round((time.monotonic() - conn.opened) * 1000, 3),
        ),
    )


def _reply_health(conn: _Conn, text: str) -> msgspec.Struct | None:
    message = _decoded(conn, text)
    return message if isinstance(message, Error) else None


def _config() -> PingConfig:
    return PingConfig(ping_interval=INTERVAL, ping_timeout=INTERVAL / 3)


async def _serve(socket: WebSocket, prefix: str, periodic: bool, reply: Any,
                 greeting: msgspec.Struct | None = None) -> None:
    await socket.accept()
    conn = _Conn(socket, prefix)
    if greeting is not None:
        await conn.send(greeting)
    beats = asyncio.create_task(conn.heartbeats(periodic))
    try:
        while True:
            answer = reply(conn, await socket.receive_text())
            if answer is not None:
                await conn.send(answer)
    except WebSocketDisconnect:
        pass
    finally:
        beats.cancel()


async def ws(socket: WebSocket) -> None:
    await _serve(socket, "ws_client", False, _reply_ws)


async def ws_echo(socket: WebSocket) -> None:
    greeting = Welcome(endpoint="/ws/echo", client_id="echo_client", server_time=time.time(),
                       config=_config())
    await _serve(socket, "echo_client", False, _reply_echo, greeting)


async def ws_health(socket: WebSocket) -> None:
    greeting = HealthStatus(status="connected", client_id="health_client",
                            server_time=time.time(), config=_config())
    await _serve(socket, "health_client", True, _reply_health, greeting)


app = Starlette(routes=[
    WebSocketRoute("/ws", ws), WebSocketRoute("/ws/echo", ws_echo),
    WebSocketRoute("/ws/health", ws_health),
])


def main() -> None:
    global INTERVAL  # noqa: PLW0603 - one process, one setting
    args = peer_parser(__doc__).parse_args()
    INTERVAL = args.ping_interval
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="off",
                loop="asyncio")


if __name__ == "__main__":
    main()
