"""Handshake checks run before a WebSocket is accepted.

Litestar's CORS and CSRF middleware do not look at WebSockets, and browsers send cookies with
cross-site WebSocket handshakes, so the Origin check (against cross-site WebSocket hijacking)
is this guard's job. A rejection raised here becomes a real HTTP status on Granian.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from service.diagnostics import log_event
from service.settings import Settings


def handshake_guard(settings: Settings) -> Any:
    allowed = frozenset(settings.allowed_origins)
    expected = f"Bearer {settings.ws_auth_token}".encode() if settings.ws_auth_token else None

    def reject(connection: ASGIConnection[Any, Any, Any, Any], why: str, origin: str | None) -> None:
        client = connection.client
        log_event(
            "rejected", endpoint=connection.scope["path"], reason=why, origin=origin,
            peer=f"{client.host}:{client.port}" if client else None,
        )

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        origin = connection.headers.get("origin")
        if origin is None:
            if settings.ws_require_origin:
                reject(connection, "origin missing", origin)
                raise PermissionDeniedException("an Origin header is required")
        elif not settings.any_origin and origin not in allowed:
            reject(connection, "origin not allowed", origin)
            raise PermissionDeniedException(f"origin {origin!r} is not in ALLOWED_ORIGINS")
        if expected is not None:
            given = connection.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                reject(connection, "bad or missing bearer token", origin)
                raise NotAuthorizedException("a valid 'Authorization: Bearer' token is required")

    return guard
