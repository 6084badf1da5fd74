"""``ws-service`` / ``python -m service``: run the app on an embedded Granian server.

Plain ``granian`` drops every WebSocket without a close frame on SIGTERM (clients see 1006,
emmett-framework/granian#796). Embedding the server in our own event loop lets a deploy or
restart close each client with 1001 Going Away first, then stop the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.embed import Server

from service.app import create_app
from service.codes import CloseCode
from service.control import serve_control
from service.registry import Registry
from service.settings import Settings, SettingsError, load_settings

logger = logging.getLogger("service")


def _check_bind(settings: Settings) -> None:
    """Fail with one clear line (not a Rust panic) when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            raise SettingsError(
                f"cannot listen on HOST={settings.host} PORT={settings.port}: {exc.strerror}"
            ) from None


async def _announce_ready(settings: Settings) -> None:
    """Log "ready" once the port accepts connections: Granian's worker binds after its own logs."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    while True:
        try:
            _, writer = await asyncio.open_connection(host, settings.port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        logger.info("ready: serving on http://%s:%d", settings.host, settings.port)
        return


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    registry: Registry = app.state["registry"]
    # The accept path (docs/design.md): Granian holds one of `backpressure` slots for every
    # connection that has not finished a request (WebSockets leave the pool once upgraded),
    # and only its HTTP/1 mode times out a connection that sends nothing; `auto` mode's
    # HTTP/2 sniffing waits forever, so 128 silent sockets used to lock everyone out.
    server = Server(
        app, address=settings.host, port=settings.port, interface=Interfaces.ASGI,
        http=HTTPModes.http1, backlog=settings.listen_backlog,
        backpressure=settings.http_max_connections,
        http1_settings=HTTP1Settings(
            header_read_timeout=max(1, round(settings.http_header_timeout * 1000))
        ),
        log_level=LogLevels(settings.log_level), log_access=False,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    control = None
    if settings.ws_control_socket:
        try:
            control = await serve_control(settings.ws_control_socket, registry)
        except OSError as exc:
            raise SettingsError(
                f"cannot listen on WS_CONTROL_SOCKET={settings.ws_control_socket}: "
                f"{exc.strerror or exc}"
            ) from None
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    ready = asyncio.create_task(_announce_ready(settings))
    await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if serving.done():  # the server failed on its own
        stopping.cancel()
        serving.result()
        return
    open_count = len(registry)
    logger.info("draining: new handshakes get 503, %d connection(s) get 1001", open_count)
    left = await registry.close_all(
        CloseCode.GOING_AWAY, "server shutting down", settings.ws_shutdown_timeout
    )
    logger.info("shutdown: closed %d connection(s) with 1001, %d did not finish", open_count, left)
    if control is not None:
        control.close()
    server.stop()  # type: ignore[no-untyped-call]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(serving, settings.ws_shutdown_timeout)
    # Granian's Rust threads may still run; letting the interpreter tear down under them
    # aborts the process now and then (exit 134). Every client has had its 1001: leave now.
    logging.shutdown()
    os._exit(0)


def main() -> None:
    try:
        settings = load_settings()
        _check_bind(settings)
    except SettingsError as exc:
        print(f"ws-service: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(serve(settings))
    except SettingsError as exc:
        print(f"ws-service: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
