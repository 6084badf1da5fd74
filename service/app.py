"""The application factory: ``create_app(settings)`` is the kit's plugin on an empty app."""

from __future__ import annotations

from litestar import Litestar

from service.plugin import WsKit
from service.settings import Settings


def create_app(settings: Settings | None = None) -> Litestar:
    """The service; with no argument, settings come from the environment (Granian's --factory)."""
    return Litestar(plugins=[WsKit(settings)], openapi_config=None, logging_config=None)
