"""``ws-service`` / ``python -m service``: run the app on an embedded server (``WS_SERVER``).

A plain server run drops or resets every WebSocket on SIGTERM (Granian: no close frame, clients
see 1006; uvicorn: 1012). Embedding the server in our own event loop lets a deploy or restart
close each client with 1001 Going Away first, then stop the server
(:meth:`service.servers.Adapter.serve`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys

from service.app import create_app
from service.codes import CloseCode
from service.control import serve_control
from service.registry import Registry
from service.servers import Adapter
from service.settings import Settings, SettingsError, load_settings

logger = logging.getLogger("service")


def _check_bind(settings: Settings) -> None:
    """Fail with one clear line (not a server's traceback) when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            raise SettingsError(
                f"cannot listen on HOST={settings.host} PORT={settings.port}: {exc.strerror}"
            ) from None


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    registry: Registry = app.state["registry"]
    server: Adapter = app.state["server"]
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

    async def drain() -> None:
        open_count = len(registry)
        logger.info("draining: new handshakes get 503, %d connection(s) get 1001", open_count)
        left = await registry.close_all(
            CloseCode.GOING_AWAY, "server shutting down", settings.ws_shutdown_timeout
        )
        logger.info("shutdown: closed %d connection(s) with 1001, %d did not finish",
                    open_count, left)
        if control is not None:
            control.close()

    await server.serve(app, settings, stop, drain)


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
