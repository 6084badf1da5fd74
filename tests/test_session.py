"""The session driver over a fake :class:`~service.connection.Connection`: no server at all.

What a session does with each kind of event and close is the same on every server; these
tests hold it to that without one (the servers' own behaviour is tested against real ones in
test_service.py, test_close_handshake.py and test_conformance.py).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from service.connection import Disconnect
from service.session import Session
from testkit.fake_connection import FakeConnection, close_line, run_session


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

    registry = asyncio.run(run_session(connection, script))
    assert [m["type"] for m in connection.sent] == ["pong"]
    assert connection.closes == []  # the client closed: nothing for the server to close
    line = close_line(caplog)
    assert (line["code"], line["reason"], line["closed_by"], line["cause"]) == (
        4001, "bye", "client", "client")
    assert registry.totals["/ws"].closes == {(4001, "client"): 1}


def test_a_binary_message_is_closed_with_1003_and_a_frame(caplog: pytest.LogCaptureFixture) -> None:
    connection = FakeConnection()

    async def script(session: Session) -> None:
        connection.incoming.put_nowait(b"\x00\x01")

    asyncio.run(run_session(connection, script))
    assert connection.closes == [(1003, "binary frames are unsupported; use text", True)]
    line = close_line(caplog)
    assert (line["cause"], line["close_ack"]) == ("binary", "frame")


def test_a_close_requested_from_outside_interrupts_the_pending_receive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = FakeConnection()

    async def script(session: Session) -> None:
        await connection.reading.wait()  # the session's task is inside receive()
        session.request_close(1001, "server shutting down", "shed")

    registry = asyncio.run(run_session(connection, script))
    assert connection.closes == [(1001, "server shutting down", True)]
    assert close_line(caplog)["cause"] == "shed"
    assert len(registry) == 0


def test_a_send_blocked_past_the_send_timeout_drops_the_peer_without_a_frame(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = FakeConnection()
    connection.sending_blocked = asyncio.Event()  # never set: the peer does not read

    async def script(session: Session) -> None:
        connection.incoming.put_nowait('{"type": "ping"}')  # its reply blocks
        await connection.closed.wait()

    registry = asyncio.run(run_session(connection, script, WS_SEND_TIMEOUT="0.05"))
    assert connection.closes == [(1006, "send blocked for 0.05s: peer not reading", False)]
    line = close_line(caplog)
    assert (line["cause"], line["tcp"]) == ("send_deadline", "shut_down")
    assert registry.totals["/ws"].send_deadline_drops == 1


def test_a_close_the_servers_protocol_layer_made_is_not_closed_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = FakeConnection()

    async def script(session: Session) -> None:
        connection.incoming.put_nowait(Disconnect(1009, "frame too big", by_server=True))

    asyncio.run(run_session(connection, script))
    assert connection.closes == []
    line = close_line(caplog)
    assert (line["code"], line["closed_by"], line["cause"]) == (1009, "server", "protocol")


def test_a_close_without_status_is_logged_with_the_servers_explanation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = FakeConnection()

    async def script(session: Session) -> None:
        connection.incoming.put_nowait(Disconnect(None))

    asyncio.run(run_session(connection, script))
    line = close_line(caplog)
    assert (line["code"], line["closed_by"], line["detail"]) == (1005, "unknown", "fake: no status")


def test_rate_limit_closes_are_counted_by_cause(caplog: pytest.LogCaptureFixture) -> None:
    connection = FakeConnection()

    async def script(session: Session) -> None:
        for _ in range(3):
            connection.incoming.put_nowait('{"type": "ping"}')

    registry = asyncio.run(run_session(connection, script, WS_RATE_LIMIT="1", WS_RATE_BURST="2"))
    assert connection.closes[0][0] == 1008
    assert registry.totals["/ws"].rate_limit_closes == 1
    assert close_line(caplog)["cause"] == "rate_limit"
