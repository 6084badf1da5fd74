"""The session driver over a fake :class:`~service.connection.Connection`: no server at all.

What a session does with each kind of event and close is the same on every server; these
tests hold it to that without one (the servers' own behaviour is tested against real ones in
test_service.py, test_close_handshake.py and test_conformance.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping

import pytest

from service.connection import Address, CloseOutcome, Disconnect, Received
from service.diagnostics import MARKER
from service.endpoints import WsEndpoint
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
        self.incoming: asyncio.Queue[Received] = asyncio.Queue()
        self.sent: list[dict[str, object]] = []
        self.closes: list[tuple[int, str, bool]] = []
        self.closed = asyncio.Event()
        self.reading = asyncio.Event()
        self.sending_blocked: asyncio.Event | None = None
        self.outcome = CloseOutcome(delivered=True, ack="frame")

    async def accept(self) -> bool:
        return True

    async def receive(self) -> Received:
        self.reading.set()
        return await self.incoming.get()

    async def send_text(self, text: str) -> None:
        if self.sending_blocked is not None:
            await self.sending_blocked.wait()
        self.sent.append(json.loads(text))

    async def close(self, code: int, reason: str, *, frame: bool, budget: float) -> CloseOutcome:
        self.closes.append((code, reason, frame))
        self.closed.set()
        return self.outcome if frame else CloseOutcome(delivered=False, tcp="shut_down")


def _close_line(caplog: pytest.LogCaptureFixture) -> dict[str, object]:
    for record in caplog.records:
        message = record.getMessage()
        if message.startswith(MARKER) and '"event":"close"' in message:
            line: dict[str, object] = json.loads(message.removeprefix(MARKER))
            return line
    raise AssertionError("no close line logged")


async def _run(connection: FakeConnection, script: Callable[[Session], Awaitable[None]],
               **env: str) -> Registry:
    """Run one session over ``connection`` while ``script(session)`` drives it."""
    settings = load_settings({"WS_PING_INTERVAL": "30", **env})
    registry = Registry()
    scheduler = Scheduler(resolution=0.005)
    session = Session(connection, WsEndpoint(), settings, registry=registry, scheduler=scheduler)
    task = asyncio.create_task(session.run())
    await asyncio.wait_for(script(session), 10)
    await asyncio.wait_for(task, 10)
    await scheduler.stop()
    return registry


@pytest.fixture(autouse=True)
def _diagnostics(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="service.ws")


def test_a_message_gets_its_reply_and_the_clients_close_and_reason_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = FakeConnection()

    async def script(session: Session) -> None:
        connection.incoming.put_nowait('{"type": "ping"}')
        connection.incoming.put_nowait(Disconnect(4001, "bye"))

    registry = asyncio.run(_run(connection, script))
    assert [m["type"] for m in connection.sent] == ["pong"]
    assert connection.closes == []  # the client closed: nothing for the server to close
    line = _close_line(caplog)
    assert (line["code"], line["reason"], line["closed_by"], line["cause"]) == (
        4001, "bye", "client", "client")
    assert registry.totals["/ws"].closes == {(4001, "client"): 1}


def test_a_binary_message_is_closed_with_1003_and_a_frame(caplog: pytest.LogCaptureFixture) -> None:
    connection = FakeConnection()

    async def script(session: Session) -> None:
        connection.incoming.put_nowait(b"\x00\x01")

    asyncio.run(_run(connection, script))
    assert connection.closes == [(1003, "binary frames are unsupported; use text", True)]
    line = _close_line(caplog)
    assert (line["cause"], line["close_ack"]) == ("binary", "frame")


def test_a_close_requested_from_outside_interrupts_the_pending_receive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = FakeConnection()

    async def script(session: Session) -> None:
        await connection.reading.wait()  # the session's task is inside receive()
        session.request_close(1001, "server shutting down", "shed")

    registry = asyncio.run(_run(connection, script))
    assert connection.closes == [(1001, "server shutting down", True)]
    assert _close_line(caplog)["cause"] == "shed"
    assert len(registry) == 0


def test_a_send_blocked_past_the_send_timeout_drops_the_peer_without_a_frame(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = FakeConnection()
    connection.sending_blocked = asyncio.Event()  # never set: the peer does not read

    async def script(session: Session) -> None:
        connection.incoming.put_nowait('{"type": "ping"}')  # its reply blocks
        await connection.closed.wait()

    registry = asyncio.run(_run(connection, script, WS_SEND_TIMEOUT="0.05"))
    assert connection.closes == [(1006, "send blocked for 0.05s: peer not reading", False)]
    line = _close_line(caplog)
    assert (line["cause"], line["tcp"]) == ("send_deadline", "shut_down")
    assert registry.totals["/ws"].send_deadline_drops == 1


def test_a_close_the_servers_protocol_layer_made_is_not_closed_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = FakeConnection()

    async def script(session: Session) -> None:
        connection.incoming.put_nowait(Disconnect(1009, "frame too big", by_server=True))

    asyncio.run(_run(connection, script))
    assert connection.closes == []
    line = _close_line(caplog)
    assert (line["code"], line["closed_by"], line["cause"]) == (1009, "server", "protocol")


def test_a_close_without_status_is_logged_with_the_servers_explanation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = FakeConnection()

    async def script(session: Session) -> None:
        connection.incoming.put_nowait(Disconnect(None))

    asyncio.run(_run(connection, script))
    line = _close_line(caplog)
    assert (line["code"], line["closed_by"], line["detail"]) == (1005, "unknown", "fake: no status")


def test_rate_limit_closes_are_counted_by_cause(caplog: pytest.LogCaptureFixture) -> None:
    connection = FakeConnection()

    async def script(session: Session) -> None:
        for _ in range(3):
            connection.incoming.put_nowait('{"type": "ping"}')

    registry = asyncio.run(_run(connection, script, WS_RATE_LIMIT="1", WS_RATE_BURST="2"))
    assert connection.closes[0][0] == 1008
    assert registry.totals["/ws"].rate_limit_closes == 1
    assert _close_line(caplog)["cause"] == "rate_limit"
