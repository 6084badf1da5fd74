"""What each WebSocket endpoint says: greetings and replies, built from the wire Structs.

Rules shared by all three endpoints:

* every message must be a JSON object with a string ``type``; anything else gets an ``error``
  reply and the connection stays open;
* ``{"type": "pong"}`` acknowledges a heartbeat: it is counted and opts the client in to the
  ping timeout (see ``service.session``). ``/ws/health`` does not answer it; the echo
  endpoints echo it like anything else, as the seed says they echo every message.
"""

from __future__ import annotations

import time

import msgspec

from service.messages import (
    Echo,
    Envelope,
    Environment,
    Error,
    ErrorCode,
    GetStatus,
    HealthRequest,
    HealthStatus,
    LatencyInfo,
    Number,
    PingConfig,
    Pong,
    Welcome,
    WsEcho,
    WsPong,
)
from service.session import Session
from service.settings import Settings

_envelope = msgspec.json.Decoder(Envelope)
_pong = msgspec.json.Decoder(Pong)
_health_request = msgspec.json.Decoder(HealthRequest)


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


def _error(session: Session, code: ErrorCode, detail: str) -> Error:
    return Error(error=code, detail=detail, timestamp=time.time(), client_id=session.client_id)


def _invalid(session: Session, exc: msgspec.ValidationError) -> Error:
    detail = str(exc)
    if " - at `$." not in detail or detail.endswith("`$.type`"):  # the envelope itself
        detail = f'a message must be a JSON object with a string "type" ({detail})'
    return _error(session, "invalid_message", detail)


def _parse(session: Session, text: str) -> Envelope | Error:
    try:
        return _envelope.decode(text)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: test it first
        return _invalid(session, exc)
    except msgspec.DecodeError as exc:
        return _error(session, "invalid_json", str(exc))
    except RecursionError:  # msgspec's decoder recurses: ~1,000 nested arrays fit in 4 KiB
        return _error(session, "invalid_json", "JSON nested too deeply")


def _count_pong(session: Session, text: str) -> Error | None:
    """Count a heartbeat answer; an ill-typed one gets an error instead."""
    try:
        _pong.decode(text)
    except msgspec.ValidationError as exc:
        return _invalid(session, exc)
    except RecursionError:
        return _error(session, "invalid_json", "JSON nested too deeply")
    session.record_pong()
    return None


class EchoEndpoint:
    path = "/ws/echo"
    client_prefix = "echo_client"
    periodic_heartbeat = False

    def __init__(self, settings: Settings) -> None:
        self._config = ping_config(settings)

    def greeting(self, session: Session) -> Welcome:
        return Welcome(
            endpoint=self.path, client_id=session.client_id, server_time=time.time(),
            config=self._config,
        )

    def handle(self, session: Session, text: str) -> msgspec.Struct | None:
        received_at = time.time()  # only this endpoint's reply needs the arrival time
        message = _parse(session, text)
        if isinstance(message, Error):
            return message
        if message.type == "pong" and (error := _count_pong(session, text)):
            return error
        return Echo(
            original=msgspec.Raw(text), server_timestamp=time.time(),
            client_id=session.client_id,
            latency_info=LatencyInfo(
                received_at=received_at, connection_age_ms=round(session.age * 1000, 3)
            ),
        )


class WsEndpoint:
    """The production endpoint: ``ping`` gets ``pong``, anything else is echoed."""

    path = "/ws"
    client_prefix = "ws_client"
    periodic_heartbeat = False

    def greeting(self, session: Session) -> None:
        return None

    def handle(self, session: Session, text: str) -> msgspec.Struct | None:
        started = time.perf_counter()
        message = _parse(session, text)
        if isinstance(message, Error):
            return message
        if message.type == "ping":
            return WsPong(timestamp=time.time(), client_id=session.client_id)
        if message.type == "pong" and (error := _count_pong(session, text)):
            return error
        return WsEcho(
            data=msgspec.Raw(text), timestamp=time.time(), client_id=session.client_id,
            server_processing_ms=round((time.perf_counter() - started) * 1000, 3),
        )


class HealthEndpoint:
    """Heartbeats on a fixed period, and live metrics on ``get_status``."""

    path = "/ws/health"
    client_prefix = "health_client"
    periodic_heartbeat = True

    def __init__(self, settings: Settings) -> None:
        self._config = ping_config(settings, with_duration=True)
        self._settings = settings
        self._environments: dict[str, Environment] = {}

    def _environment(self, server: object) -> Environment:
        """What health_status says of the deployment; unset public URLs name the served port."""
        settings = self._settings
        base = settings.public_base_url_for(server)
        environment = self._environments.get(base)
        if environment is None:
            ws_url = settings.ws_public_url
            if base != settings.public_base_url and ws_url == f"ws://localhost:{settings.port}/ws":
                ws_url = "ws" + base.removeprefix("http") + "/ws"
            environment = self._environments[base] = Environment(
                allowed_origins=list(settings.allowed_origins),
                public_base_url=base, ws_public_url=ws_url,
            )
        return environment

    def greeting(self, session: Session) -> HealthStatus:
        return HealthStatus(
            status="connected", client_id=session.client_id, server_time=time.time(),
            config=self._config, environment=self._environment(session.connection.server),
        )

    def handle(self, session: Session, text: str) -> msgspec.Struct | None:
        try:
            request = _health_request.decode(text)
        except msgspec.ValidationError as exc:
            if str(exc).startswith("Invalid value") and str(exc).endswith("at `$.type`"):
                return _error(
                    session, "unknown_type",
                    f"{exc}: {self.path} accepts get_status and pong",
                )
            return _invalid(session, exc)
        except msgspec.DecodeError as exc:
            return _error(session, "invalid_json", str(exc))
        except RecursionError:
            return _error(session, "invalid_json", "JSON nested too deeply")
        if isinstance(request, GetStatus):
            return HealthStatus(
                status="healthy", connection_age_seconds=round(session.age, 3),
                ping_count=session.ping_count, pong_count=session.pong_count,
                timestamp=time.time(), client_id=session.client_id,
            )
        session.record_pong()
        return None
