"""The kit's own endpoints, written with the typed endpoint API (:mod:`service.api`).

``/ws/echo`` and ``/ws`` answer every ``type`` (they receive ``Envelope``), ``/ws/health``
accepts ``get_status`` (and ``pong``, as every endpoint does). The kit answers bad input the
same way on all of them, and on the user's own endpoints.
"""

from __future__ import annotations

import time

import msgspec

from service.api import Endpoint, endpoint
from service.messages import (
    Echo,
    Envelope,
    Environment,
    GetStatus,
    HealthStatus,
    LatencyInfo,
    Number,
    PingConfig,
    Welcome,
    WsEcho,
    WsPong,
)
from service.session import Session
from service.settings import Settings


def _number(value: float) -> Number:
    """30.0 -> 30, so the wire shows what the operator configured."""
    return int(value) if value.is_integer() else value


def ping_config(settings: Settings, *, with_duration: bool = False) -> PingConfig:
    interval = _number(settings.ws_ping_interval)
    return PingConfig(
        ping_interval=interval,
        ping_timeout=_number(settings.ws_ping_timeout),
        # A client connected this long has seen at least one heartbeat.
        expected_min_connection_duration=interval if with_duration else None,
    )


def echo_endpoint(settings: Settings) -> Endpoint[Envelope]:
    """``/ws/echo``: a welcome, then every message echoed with timing."""
    config = ping_config(settings)

    def welcome(session: Session) -> Welcome:
        return Welcome(endpoint="/ws/echo", client_id=session.client_id,
                       server_time=time.time(), config=config)

    @endpoint("/ws/echo", greeting=welcome, client_prefix="echo_client")
    def echo(session: Session, message: Envelope) -> Echo:
        received_at = time.time()
        return Echo(
            original=msgspec.Raw(session.received_text), server_timestamp=time.time(),
            client_id=session.client_id,
            latency_info=LatencyInfo(
                received_at=received_at, connection_age_ms=round(session.age * 1000, 3)
            ),
        )

    return echo


def ws_endpoint() -> Endpoint[Envelope]:
    """``/ws``, the production endpoint: ``ping`` gets ``pong``, anything else is echoed."""

    @endpoint("/ws", client_prefix="ws_client")
    def ws(session: Session, message: Envelope) -> WsPong | WsEcho:
        started = time.perf_counter()
        if message.type == "ping":
            return WsPong(timestamp=time.time(), client_id=session.client_id)
        return WsEcho(
            data=msgspec.Raw(session.received_text), timestamp=time.time(),
            client_id=session.client_id,
            server_processing_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    return ws


def health_endpoint(settings: Settings) -> Endpoint[GetStatus]:
    """``/ws/health``: heartbeats on a fixed period, and live metrics on ``get_status``."""
    config = ping_config(settings, with_duration=True)
    environments: dict[str, Environment] = {}

    def environment(server: object) -> Environment:
        """What health_status says of the deployment; unset public URLs name the served port."""
        base = settings.public_base_url_for(server)
        found = environments.get(base)
        if found is None:
            ws_url = settings.ws_public_url
            if base != settings.public_base_url and ws_url == f"ws://localhost:{settings.port}/ws":
                ws_url = "ws" + base.removeprefix("http") + "/ws"
            found = environments[base] = Environment(
                allowed_origins=list(settings.allowed_origins),
                public_base_url=base, ws_public_url=ws_url,
            )
        return found

    def connected(session: Session) -> HealthStatus:
        return HealthStatus(
            status="connected", client_id=session.client_id, server_time=time.time(),
            config=config, environment=environment(session.connection.server),
        )

    @endpoint("/ws/health", greeting=connected, heartbeat="periodic",
              client_prefix="health_client")
    def health(session: Session, message: GetStatus) -> HealthStatus:
        return HealthStatus(
            status="healthy", connection_age_seconds=round(session.age, 3),
            ping_count=session.ping_count, pong_count=session.pong_count,
            timestamp=time.time(), client_id=session.client_id,
        )

    return health


def kit_endpoints(settings: Settings) -> tuple[Endpoint[GetStatus] | Endpoint[Envelope], ...]:
    """The seed's three endpoints, which the smoke checks test."""
    return echo_endpoint(settings), health_endpoint(settings), ws_endpoint()
