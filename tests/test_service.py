"""The service on each real server (Granian, uvicorn): the seed's transcripts, keep-alive,
policy, bad input, close. The same contract on both: that is what the adapters are for."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import urllib.request
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from service.messages import SERVER_MESSAGES, Echo, HealthStatus, Heartbeat, Welcome, WsEcho, WsPong
from testkit.paths import VENV_BIN
from testkit.ports import free_port, wait_for_port
from testkit.service import ServiceProcess, StartService, service_env

ON_SERVERS = ("granian", "uvicorn")  # every test that starts the service runs on each

T = TypeVar("T")
CLIENT_ID = r"^{}_\d{{13}}_\d{{5}}$"


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(bounded())


async def recv_json(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    data = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(data, str), "the service sends text frames"
    value: dict[str, Any] = json.loads(data)
    return value


async def recv_until_closed(ws: ClientConnection, timeout: float = 5) -> ConnectionClosed:
    """Read until the server closes; returns the close as the client saw it."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        return closed
    raise AssertionError("unreachable")


def close_code(closed: ConnectionClosed) -> int | None:
    return closed.rcvd.code if closed.rcvd else None


# --- HTTP /health ------------------------------------------------------------------------


def test_http_health(service: ServiceProcess) -> None:
    with urllib.request.urlopen(f"{service.http}/health", timeout=5) as response:
        assert response.status == 200
        body = json.loads(response.read())
    assert body["status"] == "ok"
    assert body["config"] == {"ping_interval": 0.4, "ping_timeout": 0.2}
    assert body["connections"] == 0


# --- The seed's transcripts, field by field -----------------------------------------------


def test_echo_transcript(service: ServiceProcess) -> None:
    async def scenario() -> None:
        async with connect(f"{service.ws}/ws/echo") as ws:
            welcome = await recv_json(ws)
            assert list(welcome) == ["type", "endpoint", "client_id", "server_time", "config"]
            assert welcome["type"] == "welcome"
            assert welcome["endpoint"] == "/ws/echo"
            assert msgspec.json.decode(json.dumps(welcome), type=Welcome)
            assert re.match(CLIENT_ID.format("echo_client"), welcome["client_id"])
            assert isinstance(welcome["server_time"], float)
            assert welcome["config"] == {"ping_interval": 0.4, "ping_timeout": 0.2}

            await ws.send('{"type":"test","data":"hello"}')
            echo = await recv_json(ws)
            assert list(echo) == [
                "type", "original", "server_timestamp", "client_id", "latency_info"
            ]
            assert echo["type"] == "echo"
            assert echo["original"] == {"type": "test", "data": "hello"}
            assert echo["client_id"] == welcome["client_id"]
            assert echo["server_timestamp"] >= echo["latency_info"]["received_at"]
            assert set(echo["latency_info"]) == {"received_at", "connection_age_ms"}
            assert 0 < echo["latency_info"]["connection_age_ms"] < 5000

            await ws.send('{"type":"ping"}')
            echo = await recv_json(ws)
            assert echo["type"] == "echo"
            assert echo["original"] == {"type": "ping"}
            await ws.close(1000)
        assert ws.close_code == 1000

    run(scenario())
    line = service.wait_for_line(r'"event":"close","endpoint":"/ws/echo"')
    assert '"code":1000' in line
    assert '"closed_by":"client"' in line
    assert "hello" not in service.output(), "message contents must not be logged"


def test_health_transcript(service: ServiceProcess) -> None:
    async def scenario() -> None:
        async with connect(f"{service.ws}/ws/health") as ws:
            status = await recv_json(ws)
            assert status["type"] == "health_status"
            assert status["status"] == "connected"
            assert re.match(CLIENT_ID.format("health_client"), status["client_id"])
            assert isinstance(status["server_time"], float)
            assert status["config"] == {
                "ping_interval": 0.4, "ping_timeout": 0.2, "expected_min_connection_duration": 0.4
            }
            assert status["environment"] == {
                "allowed_origins": ["http://localhost:3000", "http://127.0.0.1:3000"],
                "public_base_url": f"http://localhost:{service.port}",
                "ws_public_url": f"ws://localhost:{service.port}/ws",
            }

            beats = [await recv_json(ws, timeout=2) for _ in range(3)]
            assert [b["ping_number"] for b in beats] == [1, 2, 3]
            for beat in beats:
                assert set(beat) == {
                    "type", "ping_number", "timestamp", "connection_age_seconds", "client_id"
                }
                assert beat["type"] == "heartbeat"
                assert beat["client_id"] == status["client_id"]
            ages = [b["connection_age_seconds"] for b in beats]
            # About one interval apart (the exact grid is pinned in tests/test_policy.py; a
            # loaded machine only makes them late, never early).
            assert 1.2 <= ages[2] < 1.2 + 1.0
            assert 0.4 - 0.1 < ages[1] - ages[0] < 0.4 + 0.5

            await ws.send('{"type":"pong","ping_number":3}')
            await ws.send('{"type":"get_status"}')
            report = await recv_json(ws)
            assert list(report) == [
                "type", "status", "client_id", "connection_age_seconds", "ping_count",
                "pong_count", "timestamp",
            ]
            assert report["status"] == "healthy"
            assert report["ping_count"] == 3
            assert report["pong_count"] == 1
            assert report["connection_age_seconds"] >= ages[2]

    run(scenario())


def test_ws_transcript(service: ServiceProcess) -> None:
    async def scenario() -> None:
        async with connect(f"{service.ws}/ws") as ws:
            await ws.send('{"type":"ping"}')
            pong = await recv_json(ws)
            assert list(pong) == ["type", "timestamp", "client_id"]
            assert pong["type"] == "pong"
            assert re.match(CLIENT_ID.format("ws_client"), pong["client_id"])

            await ws.send('{"type":"custom","data":"test"}')
            echo = await recv_json(ws)
            assert list(echo) == ["type", "data", "timestamp", "client_id", "server_processing_ms"]
            assert echo["data"] == {"type": "custom", "data": "test"}
            assert echo["client_id"] == pong["client_id"]
            assert 0 <= echo["server_processing_ms"] < 100

    run(scenario())


def test_client_side_unions_decode_every_server_message(service: ServiceProcess) -> None:
    """The Structs in service.messages are the contract a client can decode with."""

    async def scenario() -> None:
        decoders = {path: msgspec.json.Decoder(union) for path, union in SERVER_MESSAGES.items()}
        async with connect(f"{service.ws}/ws/echo") as ws:
            assert isinstance(decoders["/ws/echo"].decode(await ws.recv()), Welcome)
            await ws.send('{"type":"x"}')
            assert isinstance(decoders["/ws/echo"].decode(await ws.recv()), Echo)
            assert isinstance(decoders["/ws/echo"].decode(await ws.recv()), Heartbeat)
        async with connect(f"{service.ws}/ws") as ws:
            await ws.send('{"type":"ping"}')
            assert isinstance(decoders["/ws"].decode(await ws.recv()), WsPong)
            await ws.send('{"type":"x"}')
            assert isinstance(decoders["/ws"].decode(await ws.recv()), WsEcho)
        async with connect(f"{service.ws}/ws/health") as ws:
            assert isinstance(decoders["/ws/health"].decode(await ws.recv()), HealthStatus)

    run(scenario())


# --- Keep-alive and ping timeout ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws/echo", "/ws"])
def test_idle_endpoints_get_heartbeats(service: ServiceProcess, path: str) -> None:
    """No endpoint stays silent longer than the interval, so no idle proxy cuts it."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with connect(f"{service.ws}{path}") as ws:
            if path == "/ws/echo":
                await recv_json(ws)  # welcome
            opened = loop.time()
            beats = [await recv_json(ws, timeout=1.5) for _ in range(3)]
            assert [b["type"] for b in beats] == ["heartbeat"] * 3
            assert [b["ping_number"] for b in beats] == [1, 2, 3]
            assert 1.2 - 0.1 < loop.time() - opened < 1.2 + 1.0  # grid: tests/test_policy.py

    run(scenario())


def test_busy_echo_connection_sends_no_extra_heartbeats(service: ServiceProcess) -> None:
    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        gaps_before_heartbeats: list[float] = []
        async with connect(f"{service.ws}/ws") as ws:
            last = loop.time()  # when the server last sent something
            for _ in range(12):  # a reply every ~0.1 s keeps the line busy for 1.2 s
                await ws.send('{"type":"ping"}')
                message = await recv_json(ws)
                while message["type"] == "heartbeat":
                    gaps_before_heartbeats.append(loop.time() - last)
                    last = loop.time()
                    message = await recv_json(ws)
                assert message["type"] == "pong"
                last = loop.time()
                await asyncio.sleep(0.1)  # pacing the client, not synchronisation
        return gaps_before_heartbeats

    gaps = run(scenario())
    # A heartbeat is only due after a whole interval (0.4 s) with nothing sent: every one this
    # client sees must follow such a silence (a stalled machine may cause one; a heartbeat
    # sent while the line was busy fails, whatever the machine).
    assert all(gap > 0.4 - 0.05 for gap in gaps), gaps


def test_client_that_stops_answering_heartbeats_is_closed(service: ServiceProcess) -> None:
    async def scenario() -> ConnectionClosed:
        async with connect(f"{service.ws}/ws/health") as ws:
            await recv_json(ws)
            beat = await recv_json(ws, timeout=2)
            await ws.send(json.dumps({"type": "pong", "ping_number": beat["ping_number"]}))
            # Now silent: the next heartbeat goes unanswered.
            return await recv_until_closed(ws, timeout=3)

    closed = run(scenario())
    assert close_code(closed) == 1011
    assert closed.rcvd is not None
    assert "heartbeat timeout" in closed.rcvd.reason
    line = service.wait_for_line(r'"event":"close","endpoint":"/ws/health"')
    assert '"code":1011' in line
    assert "WS_PING_TIMEOUT" in line


def test_client_that_never_pongs_is_not_punished(service: ServiceProcess) -> None:
    """wscat never answers heartbeats; it must stay connected however long it idles."""

    async def scenario() -> None:
        async with connect(f"{service.ws}/ws/health") as ws:
            await recv_json(ws)
            for number in range(1, 6):  # five intervals, each far past the ping timeout
                assert (await recv_json(ws, timeout=2))["ping_number"] == number
            await ws.send('{"type":"get_status"}')
            report = await recv_json(ws)
            assert report["pong_count"] == 0
            assert report["ping_count"] == 5

    run(scenario())


def test_send_that_blocks_drops_the_peer(start_service: StartService) -> None:
    """A client that stops reading is dropped once one send blocks past the send timeout."""
    service = start_service(WS_SEND_TIMEOUT="0.5", WS_MAX_MESSAGE_BYTES="65536")

    async def scenario() -> None:
        # max_queue=1: the client stops reading its socket, so the server's sends back up
        # (uncompressed: permessage-deflate, where negotiated, would shrink them to nothing).
        async with connect(f"{service.ws}/ws", max_queue=1, close_timeout=1,
                           compression=None) as ws:
            payload = json.dumps({"type": "bulk", "data": "x" * 60_000})

            async def flood() -> None:
                for _ in range(400):  # bounded: 24 MB at most
                    await ws.send(payload)

            flooding = asyncio.create_task(flood())
            try:
                await asyncio.to_thread(service.wait_for_line, r"send blocked for 0.5s", 20)
            finally:
                flooding.cancel()
                ws.transport.abort()  # this client is the stuck one: do not wait on its close

    run(scenario())
    line = service.wait_for_line(r'"event":"close","endpoint":"/ws"')
    assert "peer not reading" in line
    with urllib.request.urlopen(f"{service.http}/health", timeout=5) as response:
        assert json.loads(response.read())["connections"] == 0


@pytest.mark.parametrize("path", ["/ws/echo", "/ws/health", "/ws"])
def test_protocol_pings_are_answered(service: ServiceProcess, path: str) -> None:
    """Clients and proxies that send RFC 6455 ping frames get pongs on every endpoint."""

    async def scenario() -> float:
        async with connect(f"{service.ws}{path}", ping_interval=None) as ws:
            # The waiter resolves only on a pong carrying this payload; else it times out.
            pong_waiter = await ws.ping(b"are-you-there")
            return await asyncio.wait_for(pong_waiter, 2)

    latency = run(scenario())
    assert 0 < latency < 2


# --- Origin policy and auth ---------------------------------------------------------------


def handshake_answer(url: str, **kwargs: Any) -> tuple[int, dict[str, str]]:
    """The handshake's status and, for a refusal, its headers (lower-case names)."""
    async def scenario() -> tuple[int, dict[str, str]]:
        try:
            async with connect(url, **kwargs):
                return 101, {}
        except InvalidStatus as exc:
            headers = {name.lower(): value for name, value in exc.response.headers.raw_items()}
            return exc.response.status_code, headers

    return run(scenario())


def handshake_status(url: str, **kwargs: Any) -> int:
    return handshake_answer(url, **kwargs)[0]


def test_origin_policy(service: ServiceProcess) -> None:
    url = f"{service.ws}/ws/echo"
    assert handshake_status(url) == 101, "no Origin (wscat) is accepted"
    assert handshake_status(url, origin="http://localhost:3000") == 101
    for foreign in ("http://evil.example", "http://localhost:3000.evil.example",
                    "http://localhost:30000", "https://localhost:3000"):
        assert handshake_status(url, origin=foreign) == 403, foreign
    line = service.wait_for_line(r'"event":"rejected"')
    assert '"reason":"origin not allowed"' in line


def test_origin_required_and_wildcard(start_service: StartService) -> None:
    strict = start_service(WS_REQUIRE_ORIGIN="true")
    assert handshake_status(f"{strict.ws}/ws") == 403
    assert handshake_status(f"{strict.ws}/ws", origin="http://127.0.0.1:3000") == 101
    anyone = start_service(ALLOWED_ORIGINS="*")
    assert handshake_status(f"{anyone.ws}/ws", origin="https://anything.example") == 101


def test_bearer_token_auth(start_service: StartService) -> None:
    service = start_service(WS_AUTH_TOKEN="s3cret-token")
    url = f"{service.ws}/ws/health"
    # README: no or wrong `Authorization: Bearer` gets HTTP 401, and the answer names the
    # scheme it wants (RFC 7235: a 401 carries WWW-Authenticate).
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"},
                    {"Authorization": "Basic s3cret-token"}):
        status, answer = handshake_answer(url, additional_headers=headers)
        assert status == 401, headers
        assert answer.get("www-authenticate") == 'Bearer realm="ws"', (headers, answer)
    ok = {"Authorization": "Bearer s3cret-token"}
    assert handshake_status(url, additional_headers=ok) == 101
    lower = {"Authorization": "bearer s3cret-token"}  # the scheme is case-insensitive
    assert handshake_status(url, additional_headers=lower) == 101
    assert "s3cret-token" not in service.output(), "tokens must never be logged"


def test_connection_cap_refuses_with_503_and_frees_the_slot(start_service: StartService) -> None:
    service = start_service(WS_MAX_CONNECTIONS="2")

    async def scenario() -> tuple[int, int]:
        first = await connect(f"{service.ws}/ws")
        second = await connect(f"{service.ws}/ws")
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{service.ws}/ws")
        assert refused.value.response.headers["Retry-After"] == "1"
        await second.close()
        await asyncio.to_thread(service.wait_for_line, r'"event":"close"')
        async with connect(f"{service.ws}/ws"):
            admitted = 101
        await first.close()
        return refused.value.response.status_code, admitted

    assert run(scenario()) == (503, 101)
    assert '"reason":"connection cap reached"' in service.wait_for_line(r'"event":"rejected"')


def test_message_rate_limit_closes_with_1008(start_service: StartService) -> None:
    service = start_service(WS_RATE_LIMIT="5", WS_RATE_BURST="3")

    async def scenario() -> tuple[int, ConnectionClosed]:
        async with connect(f"{service.ws}/ws") as ws:
            answered = 0
            for _ in range(3):  # the burst is served
                await ws.send('{"type":"ping"}')
                answered += (await recv_json(ws))["type"] == "pong"
            # One more at once is over 5/s. Nothing else is sent: messages still in flight
            # when the server closes can make the kernel reset the connection (see design.md).
            await ws.send('{"type":"ping"}')
            return answered, await recv_until_closed(ws)

    answered, closed = run(scenario())
    assert answered == 3
    assert close_code(closed) == 1008
    assert closed.rcvd is not None
    assert closed.rcvd.reason == "rate limit: over WS_RATE_LIMIT=5 messages/s"


# --- Bad input ----------------------------------------------------------------------------

BAD_MESSAGES = [
    ("/ws/echo", "not json", "invalid_json"),
    ("/ws/echo", '"just a string"', "invalid_message"),
    ("/ws/echo", '{"data": 1}', "invalid_message"),
    ("/ws/echo", '{"type": 5}', "invalid_message"),
    ("/ws/echo", '{"type": "pong", "ping_number": "one"}', "invalid_message"),
    ("/ws", '{"type": ', "invalid_json"),
    ("/ws", "[]", "invalid_message"),
    ("/ws/health", '{"type": "subscribe"}', "unknown_type"),
    ("/ws/health", "", "invalid_json"),
]


@pytest.mark.parametrize(("path", "text", "error"), BAD_MESSAGES)
def test_bad_message_gets_error_and_connection_survives(
    service: ServiceProcess, path: str, text: str, error: str
) -> None:
    async def scenario() -> None:
        async with connect(f"{service.ws}{path}") as ws:
            if path != "/ws":
                await recv_json(ws)  # greeting
            await ws.send(text)
            reply = await recv_json(ws)
            assert reply["type"] == "error"
            assert reply["error"] == error
            assert reply["detail"]
            # Still usable afterwards.
            if path == "/ws/health":
                await ws.send('{"type":"get_status"}')
                assert (await recv_json(ws))["type"] == "health_status"
            else:
                await ws.send('{"type":"after","n":1}')
                assert (await recv_json(ws))["type"] == "echo"

    run(scenario())


def test_binary_frame_closes_with_1003(service: ServiceProcess) -> None:
    async def scenario() -> ConnectionClosed:
        async with connect(f"{service.ws}/ws/echo") as ws:
            await recv_json(ws)
            await ws.send(b"\x00\x01binary")
            return await recv_until_closed(ws)

    closed = run(scenario())
    assert close_code(closed) == 1003
    assert closed.rcvd is not None
    assert "binary frames are unsupported; use text" in closed.rcvd.reason


def test_oversized_message_closes_with_1009(start_service: StartService, ws_server: str) -> None:
    service = start_service(WS_MAX_MESSAGE_BYTES="1024")

    async def scenario(text: str) -> ConnectionClosed | dict[str, Any]:
        async with connect(f"{service.ws}/ws") as ws:
            await ws.send(text)
            try:
                return await recv_json(ws)
            except ConnectionClosed as closed:
                return closed

    at_limit = json.dumps({"type": "x", "data": "a" * (1024 - 25)})
    assert len(at_limit.encode()) == 1024
    fits = run(scenario(at_limit))
    assert isinstance(fits, dict)
    assert fits["type"] == "echo"
    # 342 characters of 3-byte UTF-8: under the limit in characters, over it in bytes.
    over = run(scenario(json.dumps({"type": "x", "data": "€" * 342}, ensure_ascii=False)))
    assert isinstance(over, ConnectionClosed)
    assert close_code(over) == 1009
    assert over.rcvd is not None
    assert len(over.rcvd.reason.encode()) <= 123
    logged = service.wait_for_line(r'"event":"close".*"code":1009')
    line = json.loads(logged.split("WS_DIAGNOSTICS ", 1)[1])
    if ws_server == "granian":  # the service refuses the message once Granian has read it
        assert "WS_MAX_MESSAGE_BYTES=1024" in over.rcvd.reason
        assert line["cause"] == "too_big"
    else:  # uvicorn's websockets refuses the frame while reading, before the app sees it
        assert over.rcvd.reason == "frame exceeds limit of 1024 bytes"
        assert (line["cause"], line["closed_by"]) == ("protocol", "server")


# --- Shutdown ------------------------------------------------------------------------------


def test_sigterm_closes_every_client_with_1001(service: ServiceProcess) -> None:
    async def scenario() -> list[int | None]:
        clients = [
            await connect(f"{service.ws}{path}")
            for path in ("/ws/echo", "/ws/health", "/ws", "/ws", "/ws/echo")
        ]
        await recv_json(clients[0])
        await recv_json(clients[1])
        await recv_json(clients[4])
        service.proc.send_signal(signal.SIGTERM)
        closes = await asyncio.gather(*(recv_until_closed(c) for c in clients))
        return [close_code(c) for c in closes]

    assert run(scenario()) == [1001] * 5
    assert service.proc.wait(10) == 0
    assert "closed 5 connection(s) with 1001, 0 did not finish" in service.output()


# --- Start-up errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("WS_PING_INTERVAL", "abc", "WS_PING_INTERVAL='abc' is invalid"),
        ("WS_PING_INTERVAL", "-1", "WS_PING_INTERVAL='-1' is invalid"),
        ("WS_PING_TIMEOUT", "45", "WS_PING_TIMEOUT=45 must be below WS_PING_INTERVAL=30"),
        ("PORT", "99999", "PORT='99999' is invalid"),
        ("ALLOWED_ORIGINS", "localhost:3000", "ALLOWED_ORIGINS='localhost:3000' is invalid"),
    ],
)
def test_bad_setting_stops_startup(name: str, value: str, expected: str) -> None:
    env = service_env(**{"PORT": str(free_port()), name: value})
    result = subprocess.run(
        [str(VENV_BIN / "ws-service")], env=env, capture_output=True, text=True, timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Listening" not in result.stdout + result.stderr


def test_port_in_use_is_a_clear_error(service: ServiceProcess) -> None:
    env = service_env(PORT=str(service.port))
    result = subprocess.run(
        [str(VENV_BIN / "ws-service")], env=env, capture_output=True, text=True, timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert f"cannot listen on HOST=127.0.0.1 PORT={service.port}" in result.stderr


def _listen_backlog(port: int) -> int:
    """The backlog of the LISTEN socket on ``port``, as ``ss -ltn`` shows it (its Send-Q)."""
    done = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                          timeout=10, check=True)
    rows = [row.split() for row in done.stdout.splitlines() if row.strip()]
    assert len(rows) == 1, done.stdout  # one listener: State Recv-Q Send-Q Local Peer
    state, _, send_q, local, _ = rows[0]
    assert (state, local) == ("LISTEN", f"127.0.0.1:{port}"), done.stdout
    return int(send_q)


def test_listen_backlog_is_the_listening_sockets_accept_queue(start_service: StartService) -> None:
    """README: ``LISTEN_BACKLOG`` is the kernel's accept queue (128 ... 65535), which the kernel
    caps at ``net.core.somaxconn``. 333 is no server's default (the service's and Granian's
    1024, uvicorn's 2048), so the setting must have reached the server's listen()."""
    service = start_service(LISTEN_BACKLOG="333")
    assert _listen_backlog(service.port) == 333
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    widest = start_service(LISTEN_BACKLOG="65535")
    assert _listen_backlog(widest.port) == min(65535, somaxconn)


@pytest.mark.server("granian")
def test_plain_granian_factory_run(start_service: StartService) -> None:
    """The design card's local ``granian`` run serves the same app (without the 1001 shutdown),
    on Granian's port, whatever ``PORT`` says: the service follows the port it is served on."""
    port = free_port()
    service = start_service(
        argv=[str(VENV_BIN / "granian"), "--interface", "asgi", "--factory",
              "--host", "127.0.0.1", "--port", str(port), "service.app:create_app"],
        PORT=str(free_port()), ready=None,  # another port than Granian's
    )
    assert service.port != port
    wait_for_port(port)

    async def scenario() -> tuple[str, str]:
        async with connect(f"ws://127.0.0.1:{port}/ws/echo") as ws:
            welcome = str((await recv_json(ws))["type"])
        async with connect(f"ws://127.0.0.1:{port}/ws/health") as ws:
            status = await recv_json(ws)
        return welcome, str(status["environment"]["public_base_url"])

    assert run(scenario()) == ("welcome", f"http://localhost:{port}")

