"""The server's close, completed as RFC 6455 section 7.1.1 asks, with clients still sending.

Granian closes the TCP connection as soon as its close frame is written. A client whose frames
were still on the way got a reset: its reply to our close failed, and Chromium and most
libraries then report 1006, losing the code that did arrive. The Granian adapter holds the
connection's descriptor across Granian's close and reads to the client's close frame
(``service.servers.granian_tcp.linger``). These clients are the ones that broke it: raw
sockets that keep sending until the close frame arrives, then answer it, and one that never
answers. uvicorn waits for the client's close frame itself: the clean end is held on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.servers.granian import LINGER_SECONDS
from service.servers.granian_tcp import LINGER_MAX_BYTES, Sockets, _ClientFrames
from testkit.procfs import socket_count, wait_until
from testkit.rawws import BINARY, CLOSE, PING, PONG, TEXT, RawWebSocket, encode_frame
from testkit.service import ServiceProcess, StartService

CLIENTS = 10
ON_SERVERS = ("granian",)  # the linger is Granian's adapter's; a test marked server() says


def _frames() -> list[bytes]:
    rng = random.Random(6455)  # noqa: S311 - payload bytes, not secrets
    shapes = [(TEXT, 5), (BINARY, 200), (TEXT, 70_000), (PING, 3), (PONG, 0), (TEXT, 125),
              (TEXT, 126)]
    return [encode_frame(op, rng.randbytes(n)) for op, n in shapes]


def test_a_descriptor_found_for_a_close_that_gave_up_meanwhile_is_closed() -> None:
    """The answer arrives, then the close times out before its task resumes: the duplicate
    must be closed there, or it holds the connection open (a CI run left one socket behind
    after 2,000 closes through nginx)."""
    async def race() -> socket.socket:
        sockets = Sockets()
        kept, other = socket.socketpair()
        other.close()
        pair = (("127.0.0.1", 1), ("127.0.0.1", 2))
        asker = asyncio.create_task(sockets.hold(pair))
        await asyncio.sleep(0)  # the asker now waits for the scan's answer
        (future,) = sockets._pending[pair]
        future.set_result(kept)
        asker.cancel()  # before the asker has resumed
        with contextlib.suppress(asyncio.CancelledError):
            await asker
        assert asker.cancelled()
        return kept

    assert asyncio.run(race()).fileno() == -1


def test_the_frame_walk_finds_the_close_frame_wherever_reads_split_the_stream() -> None:
    stream = b"".join(_frames())
    close = encode_frame(CLOSE, (1001).to_bytes(2, "big"))
    for cut in range(0, len(stream) + 1, 61):
        frames = _ClientFrames()
        assert not frames.feed(stream[:cut]), cut
        assert frames.feed(stream[cut:] + close), cut
        assert not frames.lost
    one_byte_at_a_time = _ClientFrames()
    seen = [one_byte_at_a_time.feed(bytes([b])) for b in stream + close]
    assert seen.index(True) == len(stream) + len(close) - 1  # the whole close frame, status too
    # Started inside a frame (Granian had read part of it; 0x7f has reserved bits set): only
    # the end of what arrives is looked at.
    lost = _ClientFrames()
    assert not lost.feed(b"\x7f" * 40)
    assert lost.lost
    assert not lost.feed(close[:-1])
    assert lost.feed(close[-1:])


def test_only_a_close_frame_with_a_valid_status_ends_the_tail_check() -> None:
    """In tail mode random bytes could look like a close header; its unmasked status must be
    one a client may send."""
    for code, valid in [(1000, True), (1001, True), (1008, True), (4000, True), (1005, False),
                        (1006, False), (999, False), (2999, False), (5000, False)]:
        frames = _ClientFrames()
        assert not frames.feed(b"\x7f" * 8)
        assert frames.feed(encode_frame(CLOSE, code.to_bytes(2, "big") + b"bye")) is valid, code
    empty = _ClientFrames()
    empty.feed(b"\x7f")
    assert empty.feed(encode_frame(CLOSE, b""))  # a close frame without status is allowed
    # The walk checks the same: a "close frame" met on a frame boundary with a status no
    # client sends means the walk was misaligned, not that the client closed.
    walked = _ClientFrames()
    assert not walked.feed(encode_frame(TEXT, b"hi") + encode_frame(CLOSE, b"\x03\xee"))
    assert walked.lost
    assert not _ClientFrames().feed(encode_frame(CLOSE, b"\x03\xe8", fin=False))


def test_a_flood_of_tiny_frames_is_walked_only_so_far() -> None:
    """Each walked frame costs a step in Python: past a thousand only the tail is checked."""
    frames = _ClientFrames()
    assert not frames.feed(encode_frame(PING, b"") * 5_000)
    assert frames.lost
    assert frames.feed(encode_frame(CLOSE, (1000).to_bytes(2, "big")))


class _SendingClient:
    """Sends echo requests without pause until the server's close frame arrives, answers it,
    then reads to the end of the TCP connection."""

    def __init__(self, service: ServiceProcess, path: str, *, answer: bool = True,
                 keep_sending: bool = False) -> None:
        self.ws = RawWebSocket(service.port, timeout=10)
        assert self.ws.handshake(path) == 101
        self.answer = answer
        self.keep_sending = keep_sending
        self.port = self.ws.sock.getsockname()[1]
        self.code: int | None = None
        self.end = "open"
        self.send_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)
        self._thread.start()

    def _send(self) -> None:
        frame = encode_frame(TEXT, json.dumps({"type": "echo", "data": "x" * 40}).encode())
        for _ in range(20_000):  # bounded; the close comes long before
            if self._stop.is_set():
                return
            try:
                self.ws.sock.sendall(frame)
            except OSError as exc:
                self.send_error = type(exc).__name__
                return
            time.sleep(0.0005)

    def stop_sending(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def finish(self) -> None:
        """Read to the close frame, stop sending, answer (or not), read to the end."""
        while self.code is None:
            frame = self.ws.recv_frame(time.monotonic() + 10)
            if frame is None:
                break
            if frame[0] == CLOSE:
                self.code = int.from_bytes(frame[1][:2], "big")
        if not self.keep_sending:
            self._stop.set()
            self._thread.join(5)
        if self.code is None:
            self.end = "no close frame"
            return
        try:
            if self.answer:
                self.ws.send(CLOSE, self.code.to_bytes(2, "big"))
            while self.ws.sock.recv(65536):
                pass
            self.end = "fin"
        except (ConnectionResetError, BrokenPipeError):
            self.end = "reset"
        except TimeoutError:
            self.end = "still open"
        finally:
            self._stop.set()
            self._thread.join(5)
            self.ws.close()


def _finishing(clients: list[_SendingClient]) -> list[threading.Thread]:
    threads = [threading.Thread(target=c.finish) for c in clients]
    for thread in threads:
        thread.start()
    return threads


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(30)


def _close_lines(service: ServiceProcess) -> dict[int, dict[str, object]]:
    """The service's close lines by the client's port (from the connect line's peer)."""
    ports: dict[str, int] = {}
    closes: dict[int, dict[str, object]] = {}
    for line in service.lines:
        if "WS_DIAGNOSTICS " not in line:
            continue
        event = json.loads(line.split("WS_DIAGNOSTICS ", 1)[1])
        if event["event"] == "connect":
            ports[event["client_id"]] = int(event["peer"].rsplit(":", 1)[1])
        elif event["event"] == "close":
            closes[ports[event["client_id"]]] = event
    return closes


def _acks(service: ServiceProcess, endpoint: str) -> dict[str, float]:
    """``ws_kit_close_acks_total`` of one endpoint from ``/metrics``, by ``ack``."""
    with urllib.request.urlopen(f"{service.http}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {sample.labels["ack"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "ws_kit_close_acks_total" and sample.labels["endpoint"] == endpoint}


def _assert_clean(clients: list[_SendingClient], code: int, lines: dict[int, dict[str, object]],
                  ws_server: str = "granian") -> None:
    outcome = {c.port: (c.code, c.end, c.send_error) for c in clients}
    assert set(outcome.values()) == {(code, "fin", None)}, outcome
    if ws_server != "granian":  # uvicorn lingers itself: the app never sees the answer
        assert {lines[c.port]["code"] for c in clients} == {code}
        return
    acks = {c.port: (lines[c.port]["code"], lines[c.port].get("close_ack")) for c in clients}
    assert set(acks.values()) == {(code, "frame")}, acks


@pytest.mark.server("granian", "uvicorn")
def test_clients_still_sending_at_shutdown_get_1001_and_a_clean_end(
        start_service: StartService, ws_server: str) -> None:
    service = start_service()
    clients = [_SendingClient(service, "/ws/echo") for _ in range(CLIENTS)]
    finishing = _finishing(clients)  # each answers the close frame as soon as it arrives
    assert service.stop() == 0
    _join(finishing)
    _assert_clean(clients, 1001, _close_lines(service), ws_server)


@pytest.mark.server("granian", "uvicorn")
def test_clients_flooding_past_the_rate_limit_get_1008_and_a_clean_end(
        start_service: StartService, ws_server: str) -> None:
    service = start_service(WS_RATE_LIMIT="50")
    baseline = socket_count(service.proc.pid)
    clients = [_SendingClient(service, "/ws") for _ in range(CLIENTS)]
    _join(_finishing(clients))
    assert wait_until(lambda: len(_close_lines(service)) == CLIENTS, 5)
    _assert_clean(clients, 1008, _close_lines(service), ws_server)
    if ws_server != "granian":
        return
    assert _acks(service, "/ws") == {"frame": CLIENTS, "eof": 0, "reset": 0, "timeout": 0,
                                     "flood": 0}
    # Every descriptor the session held to linger is closed again.
    assert wait_until(lambda: socket_count(service.proc.pid) <= baseline, 5), (
        socket_count(service.proc.pid), baseline)


def test_a_client_that_never_answers_the_close_is_released_after_the_linger(
        start_service: StartService) -> None:
    """It stops sending and keeps the socket open without a close frame: the server ends the
    connection itself once ``LINGER_SECONDS`` have passed, and says so."""
    service = start_service(WS_RATE_LIMIT="50")
    baseline = socket_count(service.proc.pid)
    client = _SendingClient(service, "/ws", answer=False)
    client.ws.sock.settimeout(LINGER_SECONDS + 5)
    client.finish()
    assert (client.code, client.end) == (1008, "fin"), (client.code, client.end)
    service.wait_for_match(r'"event":"close"', timeout=5)
    (line,) = _close_lines(service).values()
    assert line.get("close_ack") == "timeout", line
    assert _acks(service, "/ws")["timeout"] == 1
    assert wait_until(lambda: socket_count(service.proc.pid) <= baseline, 5)


def test_a_client_that_keeps_sending_after_the_close_is_cut_off_after_the_linger(
        start_service: StartService) -> None:
    """The linger reads what arrives, but only for ``LINGER_SECONDS``: a client that never
    stops cannot hold the connection (or the reading) open."""
    service = start_service(WS_RATE_LIMIT="50")
    baseline = socket_count(service.proc.pid)
    client = _SendingClient(service, "/ws", answer=False, keep_sending=True)
    client.ws.sock.settimeout(LINGER_SECONDS + 5)
    client.finish()
    assert client.code == 1008
    assert client.end in {"reset", "fin"}, client.end  # ended by the server, with or without
    service.wait_for_match(r'"event":"close"', timeout=5)  # its last bytes read
    (line,) = _close_lines(service).values()
    assert line.get("close_ack") == "timeout", line
    assert wait_until(lambda: socket_count(service.proc.pid) <= baseline, 5)


def test_silent_clients_at_shutdown_share_one_linger_within_the_shutdown_time(
        start_service: StartService) -> None:
    """Ten clients that never answer the 1001: the lingers (the full ``LINGER_SECONDS`` here,
    as with the default settings) run side by side, inside WS_SHUTDOWN_TIMEOUT, and every
    session finishes."""
    service = start_service(WS_SHUTDOWN_TIMEOUT="5", WS_SEND_TIMEOUT="10")
    clients = [_SendingClient(service, "/ws/echo", answer=False) for _ in range(CLIENTS)]
    for client in clients:
        client.ws.sock.settimeout(LINGER_SECONDS + 5)
    finishing = _finishing(clients)
    assert service.stop() == 0
    _join(finishing)
    assert {(c.code, c.end) for c in clients} == {(1001, "fin")}
    assert f"closed {CLIENTS} connection(s) with 1001, 0 did not finish" in service.output()
    acks = {event.get("close_ack") for event in _close_lines(service).values()}
    assert acks == {"timeout"}, acks


def test_a_client_flooding_after_the_close_is_cut_off_at_the_byte_cap(
        start_service: StartService) -> None:
    """Two MiB of empty pings right after the close frame: the linger reads one MiB at most
    (``LINGER_MAX_BYTES``), then closes; the service answers /health meanwhile and after."""
    service = start_service(WS_RATE_LIMIT="50", WS_SEND_TIMEOUT="10")
    baseline = socket_count(service.proc.pid)
    client = _SendingClient(service, "/ws", answer=False)
    client.ws.sock.settimeout(LINGER_SECONDS + 5)
    flood = encode_frame(PING, b"") * (2 * LINGER_MAX_BYTES // 6)
    code = None
    while code is None:
        frame = client.ws.recv_frame(time.monotonic() + 10)
        assert frame is not None
        if frame[0] == CLOSE:
            code = int.from_bytes(frame[1][:2], "big")
    client.stop_sending()
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        client.ws.sock.sendall(flood)
    service.wait_for_match(r'"event":"close"', timeout=10)
    (line,) = _close_lines(service).values()
    assert (code, line.get("close_ack")) == (1008, "flood"), line
    assert _acks(service, "/ws")["flood"] == 1
    client.ws.close()
    assert wait_until(lambda: socket_count(service.proc.pid) <= baseline, 5)


@pytest.mark.parametrize("cut", [1, 5])
def test_a_close_frame_split_across_reads_is_still_seen(cut: int) -> None:
    """The client's answer may arrive in pieces; the walk waits for the whole frame."""
    close = encode_frame(CLOSE, (1000).to_bytes(2, "big"))
    frames = _ClientFrames()
    assert not frames.feed(encode_frame(TEXT, b"late") + close[:cut])
    assert frames.feed(close[cut:])

