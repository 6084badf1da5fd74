"""Settings from the environment: defaults, parsing, and errors that tell the operator the fix."""

from __future__ import annotations

import pytest

from service.settings import (
    ACCEPTS,
    DEFAULT_ALLOWED_ORIGINS,
    Settings,
    SettingsError,
    load_settings,
)


def test_defaults_work_with_an_empty_environment() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.port == 9000
    assert settings.ws_ping_interval == 30
    assert settings.ws_ping_timeout == 10
    assert settings.allowed_origins == DEFAULT_ALLOWED_ORIGINS
    assert settings.public_base_url == "http://localhost:9000"
    assert settings.ws_public_url == "ws://localhost:9000/ws"
    assert settings.ws_max_message_bytes == 65536
    assert settings.ws_send_timeout == 10


def test_values_are_parsed() -> None:
    settings = load_settings({
        "PORT": "9100", "WS_PING_INTERVAL": "0.5", "WS_PING_TIMEOUT": "0.25",
        "ALLOWED_ORIGINS": " https://a.example , https://b.example:8443,",
        "WS_REQUIRE_ORIGIN": "TRUE", "LOG_LEVEL": "DEBUG", "WS_SEND_TIMEOUT": "2",
        "PUBLIC_BASE_URL": "https://api.example", "WS_PUBLIC_URL": "wss://api.example/ws",
    })
    assert settings.port == 9100
    assert settings.ws_ping_interval == 0.5
    assert settings.allowed_origins == ("https://a.example", "https://b.example:8443")
    assert settings.ws_require_origin is True
    assert settings.log_level == "debug"
    assert settings.ws_send_timeout == 2
    assert settings.public_base_url == "https://api.example"
    assert settings.ws_public_url == "wss://api.example/ws"


def test_interval_alone_is_enough() -> None:
    """Setting only WS_PING_INTERVAL never trips over the default timeout."""
    assert load_settings({"WS_PING_INTERVAL": "5"}).ws_ping_timeout == 2.5
    assert load_settings({"WS_PING_INTERVAL": "60"}).ws_ping_timeout == 10


def test_origins_are_compared_lower_case() -> None:
    settings = load_settings({"ALLOWED_ORIGINS": "https://App.Example:8443"})
    assert settings.allowed_origins == ("https://app.example:8443",)


def test_blank_values_mean_default_but_a_blank_token_stays_blank() -> None:
    settings = load_settings({"WS_PING_INTERVAL": "  ", "WS_AUTH_TOKEN": ""})
    assert settings.ws_ping_interval == 30
    assert settings.ws_auth_token == ""


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WS_PING_INTERVAL", "abc"),
        ("WS_PING_INTERVAL", "0"),
        ("WS_PING_INTERVAL", "inf"),
        ("WS_PING_INTERVAL", "1e-9"),
        ("ALLOWED_ORIGINS", ","),
        ("WS_PING_TIMEOUT", "-1"),
        ("PORT", "0"),
        ("PORT", "http"),
        ("WS_REQUIRE_ORIGIN", "maybe"),
        ("WS_MAX_MESSAGE_BYTES", "10"),
        ("ALLOWED_ORIGINS", "https://ok.example,https://bad.example/path"),
        ("WS_PUBLIC_URL", "http://not-ws.example/ws"),
        ("PUBLIC_BASE_URL", "ftp://x"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_bad_value_names_variable_value_and_what_it_accepts(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({name: value})
    message = str(info.value)
    assert message.startswith(f"{name}={value.strip()!r} is invalid")
    assert ACCEPTS[name] in message


def test_timeout_must_be_below_interval() -> None:
    with pytest.raises(SettingsError, match="WS_PING_TIMEOUT=5 must be below WS_PING_INTERVAL=5"):
        load_settings({"WS_PING_INTERVAL": "5", "WS_PING_TIMEOUT": "5"})


def test_every_field_is_documented() -> None:
    fields = {name.upper() for name in Settings.__struct_fields__}
    assert fields == set(ACCEPTS)
