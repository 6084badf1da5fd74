"""One settings object, built once from the environment and validated before anything listens."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

DEFAULT_ALLOWED_ORIGINS = ("http://localhost:3000", "http://127.0.0.1:3000")

# 50 ms floor: a shorter heartbeat is a busy loop, not a keep-alive.
_Seconds = Annotated[float, msgspec.Meta(ge=0.05, le=3600)]
_Origin = Annotated[str, msgspec.Meta(pattern=r"^(\*|https?://[^/\s,]+)$")]


class Settings(msgspec.Struct, frozen=True, rename="upper", kw_only=True):
    """Every knob of the service; field names are the environment variables, upper-cased.

    One name per setting: a setting whose default depends on another (``0`` or ``""`` below)
    holds its effective value once built, so nothing needs a second, derived name.
    """

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 9000
    ws_ping_interval: _Seconds = 30.0
    ws_ping_timeout: _Seconds = 0.0
    """0 (unset): 10 s, capped at half the interval."""
    public_base_url: Annotated[str, msgspec.Meta(pattern=r"^https?://\S+$")] = ""
    """Unset: ``http://localhost:PORT``."""
    ws_public_url: Annotated[str, msgspec.Meta(pattern=r"^wss?://\S+$")] = ""
    """Unset: ``ws://localhost:PORT/ws``."""
    allowed_origins: Annotated[tuple[_Origin, ...], msgspec.Meta(min_length=1)] = (
        DEFAULT_ALLOWED_ORIGINS
    )
    ws_require_origin: bool = False
    ws_auth_token: str = ""
    ws_max_message_bytes: Annotated[int, msgspec.Meta(ge=128, le=16 * 1024 * 1024)] = 64 * 1024
    ws_send_timeout: _Seconds = 0.0
    """0 (unset): the ping timeout."""
    ws_max_connections: Annotated[int, msgspec.Meta(ge=0)] = 0
    ws_rate_limit: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] = 0.0
    ws_rate_burst: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    """0 (unset): one second's worth of ``ws_rate_limit`` (at least 1)."""
    ws_shutdown_timeout: _Seconds = 5.0
    listen_backlog: Annotated[int, msgspec.Meta(ge=128, le=65535)] = 1024
    http_max_connections: Annotated[int, msgspec.Meta(ge=16, le=1_000_000)] = 1024
    http_header_timeout: _Seconds = 10.0
    ws_control_socket: Annotated[str, msgspec.Meta(pattern=r"^(/\S+)?$")] = ""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics: bool = True
    ws_server: Literal["granian", "uvicorn"] = "granian"
    """The server ``ws-service`` embeds (service.servers); uvicorn needs the ``uvicorn`` extra."""
    ws_app: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")] = (
        "service.app:create_app"
    )
    """The app ``ws-service`` serves: ``module:factory``, called with these settings."""

    def __post_init__(self) -> None:
        # A pong-aware client must be able to answer one heartbeat before the next is due.
        if self.ws_ping_timeout and self.ws_ping_timeout >= self.ws_ping_interval:
            raise ValueError(
                f"WS_PING_TIMEOUT={self.ws_ping_timeout:g} must be below "
                f"WS_PING_INTERVAL={self.ws_ping_interval:g}"
            )
        ping_timeout = self.ws_ping_timeout or min(10.0, self.ws_ping_interval / 2)
        derived: dict[str, object] = {
            "ws_ping_timeout": ping_timeout,
            "public_base_url": self.public_base_url or f"http://localhost:{self.port}",
            "ws_public_url": self.ws_public_url or f"ws://localhost:{self.port}/ws",
            "ws_send_timeout": self.ws_send_timeout or ping_timeout,
            "ws_rate_burst": self.ws_rate_burst or max(1, round(self.ws_rate_limit)),
            # Browsers send origins lower-case (RFC 6454); so must the allow-list be to match.
            "allowed_origins": tuple(origin.lower() for origin in self.allowed_origins),
        }
        for name, value in derived.items():
            msgspec.structs.force_setattr(self, name, value)

    @property
    def public_base_url_configured(self) -> bool:
        """False when PUBLIC_BASE_URL is the default: then it follows the served port."""
        return self.public_base_url != f"http://localhost:{self.port}"

    def public_base_url_for(self, server: object) -> str:
        """PUBLIC_BASE_URL as served: unset, it names the port of the ASGI scope's server."""
        if self.public_base_url_configured or not (isinstance(server, tuple) and len(server) >= 2):
            return self.public_base_url
        return f"http://localhost:{int(server[1])}"

    @property
    def any_origin(self) -> bool:
        return "*" in self.allowed_origins


# What each variable accepts, for start-up errors that tell the operator how to fix them.
ACCEPTS: dict[str, str] = {
    "HOST": "an address to bind, e.g. 127.0.0.1 or 0.0.0.0",
    "PORT": "an integer port from 1 to 65535",
    "WS_PING_INTERVAL": "seconds between heartbeats, a number from 0.05 to 3600",
    "WS_PING_TIMEOUT": "seconds to wait for a pong, a number >= 0.05 and below WS_PING_INTERVAL",
    "PUBLIC_BASE_URL": "an http:// or https:// URL",
    "WS_PUBLIC_URL": "a ws:// or wss:// URL",
    "ALLOWED_ORIGINS": "a non-empty comma-separated list of scheme://host[:port] origins, or *",
    "WS_REQUIRE_ORIGIN": "true or false (also 1 or 0)",
    "WS_AUTH_TOKEN": "any string; empty turns bearer-token auth off",
    "WS_MAX_MESSAGE_BYTES": "an integer from 128 to 16777216",
    "WS_SEND_TIMEOUT": "seconds one send may block, a number >= 0.05 (default: WS_PING_TIMEOUT)",
    "WS_MAX_CONNECTIONS": (
        "an integer >= 0: WebSockets this process accepts; 0 means as many as the open-files "
        "limit holds (2 per WebSocket)"
    ),
    "WS_RATE_LIMIT": "messages per second per connection, a number >= 0; 0 turns it off",
    "WS_RATE_BURST": "an integer >= 0; 0 means one second's worth of WS_RATE_LIMIT",
    "WS_SHUTDOWN_TIMEOUT": "seconds to wait for clients to close on shutdown, >= 0.05",
    "LISTEN_BACKLOG": "an integer from 128 to 65535 (the kernel's accept queue)",
    "HTTP_MAX_CONNECTIONS": (
        "an integer from 16 to 1000000: connections still sending their request or idle "
        "between requests (upgraded WebSockets are not counted)"
    ),
    "HTTP_HEADER_TIMEOUT": "seconds a connection may take to send its request headers, >= 0.05",
    "WS_CONTROL_SOCKET": "an absolute path for the control socket (status, shed N); empty: none",
    "LOG_LEVEL": "one of debug, info, warning, error",
    "WS_SERVER": "granian or uvicorn (uvicorn needs the uvicorn extra)",
    "METRICS": "true or false (also 1 or 0); false: no /metrics route",
    "WS_APP": (
        "module:factory, a function that takes the settings and returns a Litestar app with "
        "the WsKit plugin (default service.app:create_app)"
    ),
}
_LIST_VARS = frozenset({"ALLOWED_ORIGINS"})
_LOWER_VARS = frozenset({"LOG_LEVEL", "WS_SERVER"})


class SettingsError(ValueError):
    """A bad environment value; the message names the variable, the value and what it accepts."""


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    for name in ACCEPTS:
        value = env.get(name)
        if value is None or (value.strip() == "" and name != "WS_AUTH_TOKEN"):
            continue
        value = value.strip()
        if name in _LIST_VARS:
            raw[name] = [item.strip() for item in value.split(",") if item.strip()]
        elif name in _LOWER_VARS:
            raw[name] = value.lower()
        else:
            raw[name] = value
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        name = message.rsplit("$.", 1)[-1].split("[", 1)[0].rstrip("`") if "$." in message else ""
        if name in ACCEPTS:
            shown = env.get(name, "")
            raise SettingsError(
                f"{name}={shown!r} is invalid ({message.split(' - at ', maxsplit=1)[0]}); "
                f"{name} accepts {ACCEPTS[name]}"
            ) from None
        name = message.split("=", 1)[0]
        if name in ACCEPTS:  # a cross-field rule from __post_init__
            raise SettingsError(f"{message}; {name} accepts {ACCEPTS[name]}") from None
        raise SettingsError(f"invalid settings: {message}") from None
