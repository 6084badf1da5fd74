"""Conformance results: msgspec Structs, so ``--json`` is one encode call (as smoke.model)."""

from __future__ import annotations

from typing import Literal

import msgspec

Verdict = Literal["pass", "non-strict", "fail", "informational"]
"""``pass``: what the RFC requires (or the best of what it allows); ``non-strict``: allowed
but not the best behaviour (a close without the status code that names the error, TCP closed
before the client's close frame); ``fail``: a MUST broken (invalid input answered, no close,
a hang); ``informational``: an optional feature, reported (permessage-deflate declined)."""
VERDICTS: tuple[Verdict, ...] = ("pass", "non-strict", "fail", "informational")

TcpEnd = Literal["fin", "reset", "open"]
"""How the server ended the TCP connection: ``open``: it had not when the case ended."""

EchoMode = Literal["raw", "json"]


class Observed(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the server did in one case, as seen on the wire."""

    handshake_status: int | None = None
    extensions: str | None = None
    """The handshake's Sec-WebSocket-Extensions answer (only where the case offered one)."""
    frames: list[str] = msgspec.field(default_factory=list)
    """Every frame the server sent, in order, then how the TCP connection ended."""
    echo: bool | None = None
    """Whether the message sent came back (echo cases only)."""
    close_code: int | None = None
    """The server's close frame's status code; 1005 for a close frame without one; None when
    no close frame came."""
    close_reason: str | None = None
    tcp: TcpEnd | None = None
    close_ms: float | None = None
    """From the case's last frame sent to the server's close frame."""
    tcp_end_ms: float | None = None
    """From the case's last frame sent to the end of the TCP connection."""
    closed_before_client_close: bool | None = None
    """The server ended TCP before this client sent its close frame (server-closed cases)."""


class CaseResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    category: str
    title: str
    rfc: str
    expected: str
    verdict: Verdict
    detail: str
    """One line: what happened, and why that is the verdict."""
    duration_s: float
    observed: Observed


class ConformanceReport(msgspec.Struct, kw_only=True):
    tool: str
    target: str
    echo: EchoMode
    echo_detected: bool
    """True: ``--echo auto`` chose the mode from the server's answer to a probe message."""
    server_header: str | None
    started_at: float
    duration_s: float
    exit_code: int
    counts: dict[str, int]
    results: list[CaseResult]
    warnings: list[str] = msgspec.field(default_factory=list)
