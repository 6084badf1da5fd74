"""WebSocket close codes: ``websockets``' :class:`~websockets.frames.CloseCode` (RFC 6455
section 7.4.1, the IANA registry), the one vocabulary of service and smoke, with the meaning
each log line and report prints."""

from __future__ import annotations

from websockets.frames import CloseCode

__all__ = ["CloseCode", "close_code_name"]

_MEANINGS = {
    CloseCode.NORMAL_CLOSURE: "normal closure",
    CloseCode.GOING_AWAY: "going away",
    CloseCode.PROTOCOL_ERROR: "protocol error",
    CloseCode.UNSUPPORTED_DATA: "unsupported data",
    CloseCode.NO_STATUS_RCVD: "no status code",
    CloseCode.ABNORMAL_CLOSURE: "abnormal closure, no close frame",
    CloseCode.INVALID_DATA: "invalid payload",
    CloseCode.POLICY_VIOLATION: "policy violation",
    CloseCode.MESSAGE_TOO_BIG: "message too big",
    CloseCode.MANDATORY_EXTENSION: "missing extension",
    CloseCode.INTERNAL_ERROR: "internal error",
    CloseCode.SERVICE_RESTART: "service restart",
    CloseCode.TRY_AGAIN_LATER: "try again later",
    CloseCode.BAD_GATEWAY: "bad gateway",
    CloseCode.TLS_HANDSHAKE: "TLS handshake failure",
}


def close_code_name(code: int) -> str:
    """The registry's name for ``code``; 4000-4999 are the application's own."""
    meaning: str | None = _MEANINGS.get(code)  # type: ignore[call-overload]
    if meaning is not None:
        return meaning
    if 4000 <= code <= 4999:
        return "application-defined"
    return "unknown"
