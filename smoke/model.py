"""Results, evidence and diagnoses: plain msgspec Structs, so ``--json`` is one encode call."""

from __future__ import annotations

from typing import Literal

import msgspec

from service.codes import close_code_name

Status = Literal["pass", "fail", "skip"]
Via = Literal["target", "direct"]

CheckName = Literal[
    "tls", "http_health", "handshake", "echo_welcome", "echo_roundtrip", "latency",
    "normal_close", "ws_ping_pong", "ws_echo", "health_status", "config", "mixed_content",
    "heartbeat", "sustained", "origin_policy", "tool_error",
]
TITLES: dict[CheckName, str] = {
    "tls": "TLS certificate (wss:// only)",
    "http_health": "HTTP GET /health",
    "handshake": "Connection establishment (101)",
    "echo_welcome": "Welcome message on /ws/echo",
    "echo_roundtrip": "Echo round-trip",
    "latency": "Latency (round trips on /ws/echo)",
    "normal_close": "Normal closure 1000",
    "ws_ping_pong": "/ws ping -> pong",
    "ws_echo": "/ws echo",
    "health_status": "health_status on /ws/health",
    "config": "Config exposure",
    "mixed_content": "Public URL scheme (mixed content)",
    "heartbeat": "Heartbeat delivery",
    "sustained": "Sustained connection",
    "origin_policy": "Origin policy (foreign Origin refused)",
    "tool_error": "ws-smoke itself (a bug or a stuck step in this tool, not the target)",
}
"""Every check, in report order, with the title the report shows."""

DiagnosisCode = Literal[
    # transport: what any connection attempt may meet
    "proxy_error", "client_error", "connection_refused", "dns", "handshake_timeout",
    "tls_expired", "tls_name_mismatch", "tls_unknown_ca", "tls_not_tls_port", "tls",
    "plain_to_tls_port",
    "health_backend_unreachable", "health_http_status", "health_not_service",
    "origin_forbidden", "auth_required", "rate_limited", "backend_unreachable",
    "upgrade_not_forwarded", "not_found", "handshake_rejected", "bad_handshake",
    "backend_gone", "abnormal_close_immediate", "proxy_idle_timeout", "dropped_while_active",
    "server_closed",
    # findings: what a check measured on a working connection
    "tool_error", "no_heartbeat", "mixed_content", "origin_not_enforced", "slow_round_trips",
    "echo_mismatch", "no_greeting", "bad_config", "check_failed",
    # comparisons with --direct
    "proxy_configuration", "backend_problem",
]
"""Every diagnosis this tool can give; docs/smoke.md lists each (a test holds them equal)."""

TlsError = Literal["expired", "name_mismatch", "unknown_ca", "not_tls", "other"]

ErrorKind = Literal[
    "refused", "dns", "connect_timeout", "tls", "network", "http_status", "handshake",
    "proxy", "client_error", "closed", "timeout", "stalled", "unexpected_message", "mismatch",
]
"""``client_error``: an exception this tool did not expect while connecting (recorded, so a
run still ends with a report); ``proxy``: the HTTP/SOCKS proxy in between failed."""


class TlsFacts(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The server's certificate and session, as this tool saw them."""

    version: str | None = None
    subject: str | None = None
    names: list[str] = msgspec.field(default_factory=list)
    issuer: str | None = None
    not_after: str | None = None
    days_left: float | None = None
    verified: bool
    """False with ``--insecure``, or when the verification failed (always written)."""


class Evidence(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What one connection attempt showed: the raw facts diagnoses are made from."""

    url: str
    origin: str | None = None
    proxy: str | None = None
    """The HTTP/SOCKS proxy this connection went through (only with ``--use-env-proxy``)."""
    http_status: int | None = None
    """101 when the handshake succeeded, else the rejection's status."""
    server_header: str | None = None
    allow_header: str | None = None
    error: ErrorKind | None = None
    error_detail: str | None = None
    tls_error: TlsError | None = None
    """With ``error == "tls"``: what the certificate check (or the TLS handshake) met."""
    connected_to: str | None = None
    """The address connected to, when ``--resolve`` chose it."""
    opened: bool = False
    close_code: int | None = None
    close_reason: str | None = None
    closed_by: Literal["server", "client", "network"] | None = None
    age_at_close_s: float | None = None
    idle_at_close_s: float | None = None
    """Seconds since the last message received when the connection closed."""
    messages_received: int = 0
    heartbeats_received: int = 0
    after_drop: str | None = None
    """After a 1006: what a fresh ``GET /health`` to the same target answered."""
    backend_gone: bool = False
    """That re-probe was refused (or a proxy answered 502/503/504): the server is gone."""

    def summary(self) -> str:
        """The transport facts for the report's detail column."""
        parts: list[str] = []
        if self.http_status is not None and self.http_status != 101:
            server = f" from {self.server_header}" if self.server_header else ""
            parts.append(f"HTTP {self.http_status}{server}")
        if self.close_code is not None:
            reason = f" reason {self.close_reason!r}" if self.close_reason else ""
            age = (
                f" after {self.age_at_close_s:.2f}s" if self.age_at_close_s is not None else ""
            )
            parts.append(
                f"close {self.close_code} ({close_code_name(self.close_code)}){reason}{age}"
            )
        if self.proxy:
            parts.append(f"via proxy {self.proxy}")
        return ", ".join(parts)


class CheckResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: CheckName
    title: str
    status: Status
    duration_s: float
    detail: str
    via: Via = "target"
    evidence: Evidence | None = None
    metrics: dict[str, float] = msgspec.field(default_factory=dict)

    @property
    def label(self) -> str:
        """How the report names the check: ``direct:NAME`` for the ``--direct`` backend."""
        return f"direct:{self.name}" if self.via == "direct" else self.name


class Diagnosis(msgspec.Struct, kw_only=True):
    code: DiagnosisCode
    cause: str
    next_step: str
    checks: list[str]


class Report(msgspec.Struct, kw_only=True):
    tool: str
    target: str
    direct: str | None
    started_at: float
    duration_s: float
    exit_code: int
    counts: dict[str, int]
    results: list[CheckResult]
    diagnoses: list[Diagnosis]
    warnings: list[str] = msgspec.field(default_factory=list)
    """Not failures, but an operator must see them: ``--insecure``, a certificate near expiry."""
    tls: TlsFacts | None = None
