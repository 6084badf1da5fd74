"""A fake :class:`~service.connection.Connection` and a session driver over it: no server.

``tests/test_session.py`` and ``tests/test_api.py`` hold the session and the typed
endpoint API to their contract with it; the servers' own behaviour is tested against real
ones.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from service.api import Endpoint
from service.connection import Address, CloseOutcome, Disconnect, Event
from service.diagnostics import MARKER
from service.endpoints import ws_endpoint
from service.registry import Registry
from service.scheduler import Scheduler
from service.session import Session
from service.settings import load_settings


class FakeConnection:
    """Messages in from a queue, sends and closes recorded; a send can be made to block."""

    unknown_close_detail = "fake: no status"

    def __init__(self) -> None:
        self.headers: Mapping[str, str] = {"origin": "http://localhost"}
        self.peer: Address | None = ("127.0.0.1", 40000)
        self.server: object = ("127.0.0.1", 9000)
        self.incoming: asyncio.Queue[str | bytes | Disconnect] = asyncio.Queue()
        """What the client sends: a text, a binary message, or the end."""
        self.sent: list[dict[str, object]] = []
        self.closes: list[tuple[int, str, bool]] = []
        self.closed = asyncio.Event()
        self.reading = asyncio.Event()
        self.sending_blocked: asyncio.Event | None = None
        self.outcome = CloseOutcome(delivered=True, ack="frame")

    async def accept(self) -> bool:
        return True

    send_gone: tuple[type[Exception], ...] = ()

    async def receive(self) -> Event:
        """The next of ``incoming`` as a server's ASGI event."""
        self.reading.set()
        received = await self.incoming.get()
        if isinstance(received, Disconnect):
            return {"type": "websocket.disconnect", "code": received.code, "fake": received}
        if isinstance(received, str):
            return {"type": "websocket.receive", "text": received}
        return {"type": "websocket.receive", "bytes": received}

    def disconnect(self, event: Event) -> Disconnect:
        found: Disconnect = event["fake"]
        return found

    async def send_text(self, text: str) -> None:
        if self.sending_blocked is not None:
            await self.sending_blocked.wait()
        self.sent.append(json.loads(text))

    async def close(self, code: int, reason: str, *, frame: bool, budget: float) -> CloseOutcome:
        self.closes.append((code, reason, frame))
        self.closed.set()
        return self.outcome if frame else CloseOutcome(delivered=False, tcp="shut_down")


def close_line(caplog: pytest.LogCaptureFixture) -> dict[str, object]:
    for record in caplog.records:
        message = record.getMessage()
        if message.startswith(MARKER) and '"event":"close"' in message:
            line: dict[str, object] = json.loads(message.removeprefix(MARKER))
            return line
    raise AssertionError("no close line logged")


async def run_session(connection: FakeConnection, script: Callable[[Session], Awaitable[None]],
                      endpoint: Endpoint[Any] | None = None, **env: str) -> Registry:
    """Run one session over ``connection`` (on ``/ws`` unless told) while ``script(session)``
    drives it."""
    settings = load_settings({"WS_PING_INTERVAL": "30", **env})
    registry = Registry()
    scheduler = Scheduler(resolution=0.005)
    session = Session(connection, endpoint or ws_endpoint(), settings, registry=registry,
                      scheduler=scheduler)
    task = asyncio.create_task(session.run())
    await asyncio.wait_for(script(session), 10)
    await asyncio.wait_for(task, 10)
    await scheduler.stop()
    return registry
