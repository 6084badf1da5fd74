"""Apps for ``WS_APP`` cases the runner must refuse (tests/test_plugin.py)."""

from __future__ import annotations

from litestar import Litestar

from service.settings import Settings


def without_the_kit(settings: Settings) -> Litestar:
    """A Litestar app that forgot ``plugins=[WsKit(settings)]``."""
    return Litestar(route_handlers=[])
