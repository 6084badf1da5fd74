"""WebSocket close codes (RFC 6455 section 7.4.1, IANA registry), shared by service and smoke."""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MISSING_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    TLS_HANDSHAKE = 1015

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    CloseCode.NORMAL: "normal closure",
    CloseCode.GOING_AWAY: "going away",
    CloseCode.PROTOCOL_ERROR: "protocol error",
    CloseCode.UNSUPPORTED_DATA: "unsupported data",
    CloseCode.NO_STATUS: "no status code",
    CloseCode.ABNORMAL: "abnormal closure, no close frame",
    CloseCode.INVALID_PAYLOAD: "invalid payload",
    CloseCode.POLICY_VIOLATION: "policy violation",
    CloseCode.MESSAGE_TOO_BIG: "message too big",
    CloseCode.MISSING_EXTENSION: "missing extension",
    CloseCode.INTERNAL_ERROR: "internal error",
    CloseCode.SERVICE_RESTART: "service restart",
    CloseCode.TRY_AGAIN_LATER: "try again later",
    CloseCode.TLS_HANDSHAKE: "TLS handshake failure",
}


def close_code_name(code: int) -> str:
    """The registry's name for ``code``; 4000-4999 are the application's own."""
    if code in CloseCode._value2member_map_:
        return CloseCode(code).meaning
    if 4000 <= code <= 4999:
        return "application-defined"
    return "unknown"
