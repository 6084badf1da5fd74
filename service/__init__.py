"""ws-kit: WebSockets that survive proxies, in the kit's service and in your own Litestar app.

In your own app: ``Litestar(plugins=[WsKit(endpoints=[...])])``, with endpoints declared by
:func:`endpoint` (README, "In your own app"). The names load on first use, so ``ws-smoke``
and the benchmark's peers, which import a module or two of this package, stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.api import Endpoint, endpoint
    from service.messages import Envelope
    from service.plugin import WsKit
    from service.session import Session
    from service.settings import Settings, load_settings

__version__ = "0.1.0"
__all__ = ["Endpoint", "Envelope", "Session", "Settings", "WsKit", "endpoint", "load_settings"]

_HOMES = {
    "Endpoint": "service.api", "endpoint": "service.api",
    "Envelope": "service.messages", "WsKit": "service.plugin", "Session": "service.session",
    "Settings": "service.settings", "load_settings": "service.settings",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'service' has no attribute {name!r}")
