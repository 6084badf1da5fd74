"""Handshake checks run before a WebSocket is accepted: Origin, bearer token, cap, draining.

Litestar's CORS and CSRF middleware do not look at WebSockets, and browsers send cookies with
cross-site WebSocket handshakes, so the Origin check (against cross-site WebSocket hijacking)
is this middleware's job. It answers with a real HTTP status (403, or 401 with
``WWW-Authenticate``) through the ASGI WebSocket denial-response extension, which Granian
supports; a server without it gets a pre-accept close, which it turns into 403.

Once shutdown has begun, new handshakes get 503: nginx's ``proxy_next_upstream http_503``
retries them on another backend, so a rolling restart costs a reconnecting client nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    WebSocketResponseBodyEvent,
    WebSocketResponseStartEvent,
)

from service.diagnostics import log_event
from service.metrics import REFUSAL_REASONS
from service.origin import loopback_same_origin, origin_of
from service.registry import Registry
from service.settings import Settings

_DENIAL = "websocket.http.response"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def handshake_middleware(
    settings: Settings, registry: Registry, cap: int,
) -> Callable[[ASGIApp], ASGIApp]:
    """``cap``: the WebSockets this process accepts (``service.limits.Capacity``), never 0."""
    # The service's own public origin (PUBLIC_BASE_URL) is where /ws-check is served from:
    # accepted without being listed, so the check page works wherever the service is.
    # Unset, PUBLIC_BASE_URL follows the port the server really serves (scope["server"]); and
    # a page on a loopback name may always open WebSockets to the server that served it.
    allowed = frozenset(settings.allowed_origins) | {origin_of(settings.public_base_url)}
    token = settings.ws_auth_token.encode() if settings.ws_auth_token else None

    def check(scope: Scope) -> tuple[int, str, str] | None:
        """(HTTP status, log reason, response text) for a handshake to refuse, else None."""
        origin = _header(scope, b"origin")
        if origin is None:
            if settings.ws_require_origin:
                return 403, "origin missing", "an Origin header is required\n"
        elif (not settings.any_origin and origin not in allowed
              and origin != origin_of(settings.public_base_url_for(scope.get("server")))
              and not loopback_same_origin(origin, _header(scope, b"host"))):
            return 403, "origin not allowed", f"origin {origin!r} is not in ALLOWED_ORIGINS\n"
        if token is not None:
            scheme, _, given = (_header(scope, b"authorization") or "").partition(" ")
            # The scheme is case-insensitive (RFC 7235); the token is compared in constant time.
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode("latin-1"), token
            ):
                return 401, "bad or missing bearer token", "a valid bearer token is required\n"
        return None

    active = 0  # WebSocket scopes inside the app, handshakes included

    def middleware(app: ASGIApp) -> ASGIApp:
        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal active
            if scope["type"] != ScopeType.WEBSOCKET:
                await app(scope, receive, send)
                return
            refusal = check(scope)
            if refusal is None and registry.closing:
                refusal = 503, "draining", "server shutting down; retry on another backend\n"
            if refusal is None and active >= cap:
                refusal = 503, "connection cap reached", f"capacity of {cap} WebSockets reached\n"
            if refusal is None:
                active += 1
                try:
                    await app(scope, receive, send)
                finally:
                    active -= 1
                return
            status, reason, text = refusal
            registry.refuse(REFUSAL_REASONS.get(reason, "other"))
            client = scope.get("client")
            log_event(
                "rejected", endpoint=scope["path"], status=status, reason=reason,
                origin=_header(scope, b"origin"),
                peer=f"{client[0]}:{client[1]}" if client else None,
            )
            await receive()  # websocket.connect
            if _DENIAL not in (scope.get("extensions") or {}):
                await send({"type": "websocket.close", "code": 1008, "reason": reason})
                return
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            if status == 401:
                headers.append((b"www-authenticate", b'Bearer realm="ws"'))
            elif status == 503:
                headers.append((b"retry-after", b"1"))
            start: WebSocketResponseStartEvent = {
                "type": "websocket.http.response.start", "status": status, "headers": headers,
            }
            body: WebSocketResponseBodyEvent = {
                "type": "websocket.http.response.body", "body": text.encode(), "more_body": False,
            }
            await send(start)
            await send(body)

        return guarded

    return middleware
