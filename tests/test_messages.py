"""The wire Structs encode to the seed's shapes and decode with the per-endpoint unions."""

from __future__ import annotations

import msgspec
import pytest

from service.endpoints import ping_config
from service.messages import (
    SERVER_MESSAGES,
    Echo,
    Error,
    GetStatus,
    HealthRequest,
    HealthStatus,
    Heartbeat,
    LatencyInfo,
    Pong,
    Welcome,
    WsEcho,
)
from service.settings import Settings


def test_welcome_matches_the_seed_transcript() -> None:
    welcome = Welcome(
        endpoint="/ws/echo", client_id="echo_client_1699564800123_12345",
        server_time=1699564800.123, config=ping_config(Settings()),
    )
    assert msgspec.json.encode(welcome) == (
        b'{"type":"welcome","endpoint":"/ws/echo","client_id":"echo_client_1699564800123_12345",'
        b'"server_time":1699564800.123,"config":{"ping_interval":30,"ping_timeout":10}}'
    )


def test_echo_keeps_the_original_bytes() -> None:
    original = '{"type":"test","data":"hello"}'
    echo = Echo(
        original=msgspec.Raw(original), server_timestamp=1.5, client_id="c",
        latency_info=LatencyInfo(received_at=1.5, connection_age_ms=1111.5),
    )
    assert msgspec.json.encode(echo) == (
        b'{"type":"echo","original":{"type":"test","data":"hello"},"server_timestamp":1.5,'
        b'"client_id":"c","latency_info":{"received_at":1.5,"connection_age_ms":1111.5}}'
    )


def test_health_status_omits_fields_it_does_not_carry() -> None:
    report = HealthStatus(
        status="healthy", client_id="h", connection_age_seconds=65.2, ping_count=2,
        pong_count=0, timestamp=2.0,
    )
    decoded = msgspec.json.decode(msgspec.json.encode(report))
    assert set(decoded) == {
        "type", "status", "client_id", "connection_age_seconds", "ping_count", "pong_count",
        "timestamp",
    }


def test_fractional_intervals_stay_fractional() -> None:
    config = ping_config(Settings(ws_ping_interval=0.5, ws_ping_timeout=0.25))
    assert msgspec.json.encode(config) == b'{"ping_interval":0.5,"ping_timeout":0.25}'


@pytest.mark.parametrize(
    ("path", "payload", "expected"),
    [
        ("/ws/echo", b'{"type":"heartbeat","ping_number":1,"timestamp":1.0,'
                     b'"connection_age_seconds":1.0,"client_id":"c"}', Heartbeat),
        ("/ws", b'{"type":"echo","data":{"a":1},"timestamp":1.0,"client_id":"c",'
                b'"server_processing_ms":0.1}', WsEcho),
        ("/ws/health", b'{"type":"error","error":"unknown_type","detail":"d","timestamp":1.0,'
                       b'"client_id":"c"}', Error),
    ],
)
def test_server_unions_are_tagged_per_endpoint(path: str, payload: bytes, expected: type) -> None:
    assert isinstance(msgspec.json.decode(payload, type=SERVER_MESSAGES[path]), expected)


def test_health_requests_are_a_tagged_union() -> None:
    decoder = msgspec.json.Decoder(HealthRequest)
    assert isinstance(decoder.decode(b'{"type":"get_status"}'), GetStatus)
    assert decoder.decode(b'{"type":"pong","ping_number":3}') == Pong(ping_number=3)
    with pytest.raises(msgspec.ValidationError, match="Invalid value 'nope'"):
        decoder.decode(b'{"type":"nope"}')
