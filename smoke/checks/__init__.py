"""The checks, one module per thing checked; each session owns one connection and records
several named, timed results (a step an earlier failure prevents is a ``skip``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from smoke.checks.echo import echo_session
from smoke.checks.health import health_session
from smoke.checks.http import http_health
from smoke.checks.origin import origin_session
from smoke.checks.tls import tls_session
from smoke.checks.ws import ws_session
from smoke.recorder import Run

Session = Callable[[Run], Awaitable[None]]


def sessions(secure: bool) -> list[Session]:
    """What runs against one target, concurrently (the TLS check only for ``wss://``)."""
    plain: list[Session] = [http_health, echo_session, ws_session, health_session,
                            origin_session]
    return [tls_session, *plain] if secure else plain
