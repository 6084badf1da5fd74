"""The wire contract: every message each endpoint sends or accepts, as msgspec Structs.

Server messages are tagged on ``type``. Two shapes share the tag ``echo`` (``/ws/echo`` and
``/ws`` answer differently, as the seed's transcripts show), so each endpoint has its own union;
``SERVER_MESSAGES`` maps an endpoint to the union a client decodes it with.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Number = int | float


class _Message(msgspec.Struct, tag_field="type", omit_defaults=True, kw_only=True):
    """Base of every tagged message; ``omit_defaults`` keeps optional fields off the wire."""


# --- Client -> server -----------------------------------------------------------------------


class Envelope(msgspec.Struct):
    """The minimum any client message must be: a JSON object with a string ``type``."""

    type: str


class Ping(_Message, tag="ping"):
    """Application-level ping on ``/ws``; answered with ``pong``."""


class Pong(_Message, tag="pong"):
    """A client's answer to a heartbeat. Its first use opts the client in to ping timeouts."""

    ping_number: int | None = None


class GetStatus(_Message, tag="get_status"):
    """Asks ``/ws/health`` for live connection metrics."""


HealthRequest = GetStatus | Pong


# --- Server -> client -----------------------------------------------------------------------


class PingConfig(msgspec.Struct, omit_defaults=True, kw_only=True):
    ping_interval: Number
    ping_timeout: Number
    expected_min_connection_duration: Number | None = None


class Environment(msgspec.Struct, kw_only=True):
    allowed_origins: list[str]
    public_base_url: str
    ws_public_url: str


class LatencyInfo(msgspec.Struct, kw_only=True):
    received_at: float
    connection_age_ms: float


class Welcome(_Message, tag="welcome"):
    endpoint: str
    client_id: str
    server_time: float
    config: PingConfig


class Echo(_Message, tag="echo"):
    """``/ws/echo``'s reply: the client's message, byte for byte, under ``original``."""

    original: msgspec.Raw
    server_timestamp: float
    client_id: str
    latency_info: LatencyInfo


class WsEcho(_Message, tag="echo"):
    """``/ws``'s reply to anything that is not a ``ping``: the message under ``data``."""

    data: msgspec.Raw
    timestamp: float
    client_id: str
    server_processing_ms: float


class WsPong(_Message, tag="pong"):
    timestamp: float
    client_id: str


class HealthStatus(_Message, tag="health_status"):
    """``/ws/health``'s greeting (status ``connected``) and ``get_status`` reply (``healthy``)."""

    status: Literal["connected", "healthy"]
    client_id: str
    server_time: float | None = None
    config: PingConfig | None = None
    environment: Environment | None = None
    connection_age_seconds: float | None = None
    ping_count: int | None = None
    pong_count: int | None = None
    timestamp: float | None = None


class Heartbeat(_Message, tag="heartbeat"):
    """Sent by the server so that no proxy sees an idle connection; see ``service.session``."""

    ping_number: int
    timestamp: float
    connection_age_seconds: float
    client_id: str


ErrorCode = Literal["invalid_json", "invalid_message", "unknown_type"]


class Error(_Message, tag="error"):
    """The answer to a message the server cannot use; the connection stays open."""

    error: ErrorCode
    detail: str
    timestamp: float
    client_id: str


EchoServerMessage = Welcome | Echo | Heartbeat | Error
HealthServerMessage = HealthStatus | Heartbeat | Error
WsServerMessage = WsPong | WsEcho | Heartbeat | Error

SERVER_MESSAGES: dict[str, Any] = {
    "/ws/echo": EchoServerMessage,
    "/ws/health": HealthServerMessage,
    "/ws": WsServerMessage,
}


class HealthResponse(msgspec.Struct, kw_only=True):
    """Body of HTTP ``GET /health``: 200 ``ok``, or 503 ``draining`` once shutdown has begun."""

    status: Literal["ok", "draining"]
    server_time: float
    connections: int
    config: PingConfig
