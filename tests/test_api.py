"""The typed endpoint API (service.api) over a fake connection: what a user's endpoint
(examples/calc's, and a few more) gets from the kit without writing it
(tests/test_plugin.py runs the example on real servers)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import calc_app
import msgspec
import pytest
from calc_app import calc

from service.api import Endpoint, endpoint
from service.connection import Disconnect
from service.session import Session
from testkit.fake_connection import FakeConnection, close_line, run_session


class Note(msgspec.Struct, tag="note"):
    text: str


@pytest.fixture(autouse=True)
def _diagnostics(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="service.ws")


def _converse(messages: list[str], on: Endpoint[Any]) -> FakeConnection:
    connection = FakeConnection()

    async def script(session: Session) -> None:
        for message in messages:
            connection.incoming.put_nowait(message)
        connection.incoming.put_nowait(Disconnect(1000, "done"))

    asyncio.run(run_session(connection, script, on))
    return connection


def test_what_clients_send_and_the_server_answers_come_from_the_annotations() -> None:
    connection = _converse(['{"type": "add", "a": 2, "b": 3}', '{"type": "mul", "a": 2, "b": 3}'],
                           calc)
    assert [(m["type"], m["value"]) for m in connection.sent] == [("result", 5), ("result", 6)]
    assert calc.client_prefix == "calc_client"


def test_bad_input_is_answered_the_kits_way_and_the_connection_stays_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = _converse([
        "not json",
        '{"type": "div", "a": 1, "b": 2}',
        '{"type": "add", "a": "two", "b": 3}',
        "[1, 2]",
        '{"type": "add", "a": 1, "b": 1}',
    ], calc)
    errors = [(m.get("error"), m.get("detail")) for m in connection.sent[:4]]
    assert errors[0][0] == "invalid_json"
    assert errors[1] == ("unknown_type",
                         "Invalid value 'div' - at `$.type`: /ws/calc accepts add, mul and pong")
    assert errors[2] == ("invalid_message", "Expected `float`, got `str` - at `$.a`")
    assert errors[3][0] == "invalid_message"
    assert str(errors[3][1]).startswith('a message must be a JSON object with a string "type"')
    assert connection.sent[4]["value"] == 2  # still open, still served
    assert close_line(caplog)["messages_in"] == 5


def test_a_pong_is_the_kits_on_every_endpoint_and_never_reaches_the_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = _converse(['{"type": "pong", "ping_number": 1}', '{"type": "pong"}'],
                           calc)
    assert connection.sent == []  # never reached the handler, which answers every message
    assert close_line(caplog)["pongs_received"] == 2


def test_an_async_handler_may_push_messages_and_close_with_its_own_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @endpoint("/ws/notes")
    async def notes(session: Session, message: Note) -> Note | None:
        await session.send(Note(text=f"got {message.text}"))
        if message.text == "bye":
            session.close(4000, "asked to leave")
            return Note(text="goodbye")
        return None

    connection = FakeConnection()

    async def script(session: Session) -> None:
        connection.incoming.put_nowait('{"type": "note", "text": "hi"}')
        connection.incoming.put_nowait('{"type": "note", "text": "bye"}')

    asyncio.run(run_session(connection, script, notes))
    assert [m["text"] for m in connection.sent] == ["got hi", "got bye", "goodbye"]
    assert connection.closes == [(4000, "asked to leave", True)]
    line = close_line(caplog)
    assert (line["code"], line["closed_by"], line["cause"]) == (4000, "server", "app")


@pytest.mark.parametrize("broken", ["raises", "wrong type"])
def test_a_failing_handler_closes_its_connection_with_1011_and_logs_why(
    broken: str, caplog: pytest.LogCaptureFixture,
) -> None:
    @endpoint("/ws/broken")
    def handler(session: Session, message: Note) -> Note:
        if broken == "raises":
            raise RuntimeError("the handler's own bug")
        return calc_app.Result(value=1, client_id="")  # type: ignore[return-value]

    connection = _converse(['{"type": "note", "text": "x"}'], handler)
    assert connection.closes == [(1011, "internal error", True)]
    assert close_line(caplog)["cause"] == "internal"
    failure = next(r for r in caplog.records if r.getMessage().startswith("connection "))
    assert failure.exc_info is not None
    expected = "the handler's own bug" if broken == "raises" else "returned a Result"
    assert expected in str(failure.exc_info[1])


def test_declarations_the_kit_cannot_run_fail_when_declared() -> None:
    class Untagged(msgspec.Struct):
        text: str

    class MyPong(msgspec.Struct, tag="pong"):
        pass

    def takes(session: Session, message: object) -> None:
        return None

    with pytest.raises(TypeError, match=r"/ws/x: what clients send must be msgspec Structs"):
        endpoint("/ws/x", receives=Untagged)(takes)
    with pytest.raises(TypeError, match=r"the 'pong' type is the kit's"):
        endpoint("/ws/x", receives=MyPong)(takes)
    with pytest.raises(TypeError, match=r"annotate the handler's message parameter"):
        endpoint("/ws/x")(lambda session, message: None)
    with pytest.raises(ValueError, match=r"must start with /"):
        endpoint("ws", receives=Note)(takes)
    with pytest.raises(TypeError, match=r"what the server sends must be msgspec Structs"):
        endpoint("/ws/x", receives=Note, sends=dict)(takes)


def test_a_handler_may_only_send_close_codes_an_endpoint_may_send() -> None:
    @endpoint("/ws/closer")
    def closer(session: Session, message: Note) -> None:
        session.close(int(message.text))

    for code in ("1005", "1006", "2999", "5000"):
        connection = _converse([f'{{"type": "note", "text": "{code}"}}'],
                               closer)
        assert connection.closes == [(1011, "internal error", True)], code
    connection = _converse(['{"type": "note", "text": "3001"}'], closer)
    assert connection.closes == [(3001, "", True)]
