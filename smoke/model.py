"""Results, evidence and diagnoses: plain msgspec Structs, so ``--json`` is one encode call."""

from __future__ import annotations

from typing import Literal

import msgspec

from service.codes import close_code_name

Status = Literal["pass", "fail", "skip"]
Via = Literal["target", "direct"]

ErrorKind = Literal[
    "refused", "dns", "connect_timeout", "tls", "network", "http_status", "handshake",
    "proxy", "client_error", "closed", "timeout", "stalled", "unexpected_message", "mismatch",
]
"""``client_error``: an exception this tool did not expect while connecting (recorded, so a
run still ends with a report); ``proxy``: the HTTP/SOCKS proxy in between failed."""


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
    name: str
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
    code: str
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
