"""``ws-service`` / ``python -m service``: run the app on an embedded server (``WS_SERVER``).

A plain server run drops or resets every WebSocket on SIGTERM (Granian: no close frame, clients
see 1006; uvicorn: 1012). Embedding the server in our own event loop lets a deploy or restart
close each client with 1001 Going Away first, then stop the server
(:meth:`service.servers.Adapter.serve`).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import socket
import sys

from litestar import Litestar

from service.control import serve_control
from service.plugin import WsKit
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


def build_app(settings: Settings) -> tuple[Litestar, WsKit]:
    """The app WS_APP names, and its kit; a clear error when it is not one."""
    module_name, _, name = settings.ws_app.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise SettingsError(f"WS_APP={settings.ws_app}: no module named {exc.name!r} "
                            f"(is the app's package installed?)") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise SettingsError(f"WS_APP={settings.ws_app}: {module_name} has no function {name!r}")
    app = factory(settings)
    if not isinstance(app, Litestar):
        raise SettingsError(f"WS_APP={settings.ws_app} returned {type(app).__name__}, "
                            f"not a Litestar app")
    try:
        kit = app.plugins.get(WsKit)
    except KeyError:
        raise SettingsError(
            f"WS_APP={settings.ws_app}: the app has no WsKit plugin; add "
            f"plugins=[WsKit(settings)] to its Litestar(...)") from None
    return app, kit


async def serve(settings: Settings) -> None:
    app, kit = build_app(settings)
    logger.info("app: %s (WS_APP)", settings.ws_app)
    registry = kit.registry
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
        await kit.drain()
        if control is not None:
            control.close()

    await kit.server.serve(app, kit.settings, stop, drain)


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
