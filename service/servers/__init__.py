"""One adapter per server (docs/design.md#servers): each module owns that server's workarounds.

``WS_SERVER`` picks one; :func:`load` imports only that one, so an optional server's package
is needed only where it is chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from service.settings import SettingsError

if TYPE_CHECKING:
    import asyncio

    from litestar import Litestar
    from litestar.types import Receive, Scope, Send

    from service.connection import Connection
    from service.settings import Settings

SERVERS = {"granian": "service.servers.granian", "uvicorn": "service.servers.uvicorn"}
EXTRAS = {"uvicorn": "uvicorn"}


class Adapter(Protocol):
    """What a server module offers: a connection per WebSocket, and serving an app."""

    name: str
    idle_connection_bytes: int

    def message_buffer(self, settings: Settings) -> tuple[int, str]: ...

    def connect(self, scope: Scope, receive: Receive, send: Send) -> Connection: ...

    async def serve(self, app: Litestar, settings: Settings, stop: asyncio.Event,
                    drain: Callable[[], Awaitable[None]]) -> None:
        """Serve until ``stop`` is set, await ``drain`` (1001 to every client), then stop."""


def load(settings: Settings) -> Adapter:
    """The adapter ``WS_SERVER`` names; a clear error when its package is not installed."""
    try:
        module = importlib.import_module(SERVERS[settings.ws_server])
    except ModuleNotFoundError as exc:  # pragma: no cover - the extra is installed in CI
        extra = EXTRAS.get(settings.ws_server, settings.ws_server)
        raise SettingsError(
            f"WS_SERVER={settings.ws_server} needs the {exc.name} package: "
            f"pip install 'ws-kit[{extra}]'"
        ) from None
    factory: Callable[[Settings], Adapter] = module.adapter
    return factory(settings)
