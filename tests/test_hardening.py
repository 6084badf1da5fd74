"""Hostile peers against the accept path, the send path and the logs (issue: hardening).

Each test is the client that would break a limit: peers that stop reading, sockets that never
finish a request, closes that carry no status.
"""

from __future__ import annotations

import json
import socket
import time

import psutil
import pytest

from tests.conftest import ServiceProcess, StartService
from tests.reliability.harness import fd_count, wait_until
from tests.reliability.rawws import CLOSE, TEXT, RawWebSocket, encode_frame


def _server_peers(service: ServiceProcess) -> set[int]:
    """Client ports of the service's ESTABLISHED TCP connections."""
    return {
        c.raddr.port
        for c in psutil.Process(service.proc.pid).net_connections("tcp")
        if c.raddr and c.status == psutil.CONN_ESTABLISHED
    }


def _flood_until_blocked(ws: RawWebSocket) -> None:
    """Send echo requests without reading until both directions are full."""
    frame = encode_frame(TEXT, json.dumps({"type": "bulk", "data": "x" * 60_000}).encode())
    ws.sock.settimeout(0.5)
    for _ in range(400):  # bounded: 24 MB at most
        try:
            ws.sock.sendall(frame)
        except TimeoutError:
            return
        except (ConnectionResetError, BrokenPipeError):
            return  # blocked, and already dropped by the server
    raise AssertionError("the server kept reading without blocking")


def test_dropped_slow_readers_lose_their_sockets_and_descriptors(
    start_service: StartService,
) -> None:
    send_timeout = 0.5
    service = start_service(WS_SEND_TIMEOUT=str(send_timeout))
    pid = service.proc.pid
    baseline = fd_count(pid)
    flooders = []
    for _ in range(5):
        ws = RawWebSocket(service.port)
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert ws.handshake("/ws") == 101
        flooders.append(ws)
    ports = {ws.sock.getsockname()[1] for ws in flooders}
    assert ports <= _server_peers(service)
    start = len(service.lines)
    for ws in flooders:
        _flood_until_blocked(ws)
    blocked_at = time.monotonic()
    for _ in flooders:
        service.wait_for_line(r"peer not reading", timeout=10, start=start)
    # The peers keep their sockets open and never read: only the server can end these.
    assert wait_until(lambda: not ports & _server_peers(service), send_timeout + 1.0), (
        f"still ESTABLISHED to {sorted(ports & _server_peers(service))}:\n"
        + "\n".join(service.lines[start:])
    )
    gone_after = time.monotonic() - blocked_at
    drops = [line for line in service.lines[start:] if "peer not reading" in line]
    assert len(drops) == 5
    assert all('"tcp":"shut_down"' in line for line in drops), drops
    assert json.loads(_get(service, "/health"))["connections"] == 0
    for ws in flooders:
        ws.close()
    assert wait_until(lambda: fd_count(pid) <= baseline, 5), (
        f"fds {fd_count(pid)} > baseline {baseline}"
    )
    assert gone_after < send_timeout + 1.0 + 0.5  # blocked_at is after the last flooder blocked


def _get(service: ServiceProcess, path: str) -> str:
    with socket.create_connection(("127.0.0.1", service.port), timeout=2) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode()


@pytest.mark.parametrize(
    ("frame", "logged"),
    [
        (encode_frame(CLOSE, (4001).to_bytes(2, "big") + b"bye now"),
         {"code": 4001, "closed_by": "client"}),
        (encode_frame(CLOSE, b""), {"code": 1005, "closed_by": "unknown"}),
        (encode_frame(TEXT, b"\xff\xfe"), {"code": 1005, "closed_by": "unknown"}),
        (b"", {"code": 1005, "closed_by": "unknown"}),  # the TCP connection just ends
    ],
    ids=["close-with-status", "close-without-status", "invalid-utf8", "tcp-drop"],
)
def test_close_log_says_who_closed_and_never_invents_the_clients_choice(
    service: ServiceProcess, frame: bytes, logged: dict[str, object]
) -> None:
    start = len(service.lines)
    with RawWebSocket(service.port) as ws:
        assert ws.handshake("/ws") == 101
        if frame:
            ws.sock.sendall(frame)
            ws.outcome(timeout=5)
    line = service.wait_for_line(r'"event":"close"', timeout=5, start=start)
    event = json.loads(line.split("WS_DIAGNOSTICS ", 1)[1])
    assert {k: event[k] for k in logged} == logged, event
    if logged["closed_by"] == "unknown":
        assert "no status code" in event["detail"], event
        assert event["reason"] is None  # not known, and not pretended to be ""
