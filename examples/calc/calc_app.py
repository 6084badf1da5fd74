"""Your own Litestar app with ws-kit added: one endpoint of yours beside the kit's.

Run it as the service runs (``ws-service`` serves what ``WS_APP`` names)::

    pip install ./examples/calc
    WS_APP=calc_app:create_app ws-service

``/ws/calc`` gets the kit's heartbeats, limits, close codes, log lines and metrics; bad input
gets the kit's error replies. ``/ws/echo``, ``/ws/health``, ``/ws`` and ``/health`` are there
for the smoke checks.
"""

from __future__ import annotations

import msgspec
from litestar import Litestar, get

from service import Session, Settings, WsKit, endpoint


class Add(msgspec.Struct, tag="add"):
    a: float
    b: float


class Mul(msgspec.Struct, tag="mul"):
    a: float
    b: float


class Result(msgspec.Struct, tag="result"):
    value: float
    client_id: str


@endpoint("/ws/calc")
def calc(session: Session, message: Add | Mul) -> Result:
    value = message.a + message.b if isinstance(message, Add) else message.a * message.b
    return Result(value=value, client_id=session.client_id)


@get("/", sync_to_thread=False)
def index() -> dict[str, str]:
    """An HTTP route of the app's own."""
    return {"calc": "/ws/calc"}


def create_app(settings: Settings | None = None) -> Litestar:
    return Litestar(route_handlers=[index], plugins=[WsKit(settings, endpoints=[calc])])
