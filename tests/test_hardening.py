"""Hostile peers against the accept path, the send path and the logs (issue: hardening).

Each test is the client that would break a limit: peers that stop reading, sockets that never
finish a request, closes that carry no status.
"""

from __future__ import annotations

import json
import math
import re
import select
import socket
import time
from pathlib import Path

import psutil
import pytest
import yaml

from testkit.figures import report
from testkit.nginx import Nginx, NginxProxy
from testkit.paths import REPO
from testkit.ports import free_port
from testkit.procfs import socket_count, wait_until
from testkit.rawws import CLOSE, TEXT, RawWebSocket, encode_frame, flood_until_blocked
from testkit.service import ServiceProcess, StartService
from testkit.site import Site, render_sites


def _server_peers(service: ServiceProcess) -> set[int]:
    """Client ports of the service's ESTABLISHED TCP connections."""
    return {
        c.raddr.port
        for c in psutil.Process(service.proc.pid).net_connections("tcp")
        if c.raddr and c.status == psutil.CONN_ESTABLISHED
    }


def test_dropped_slow_readers_lose_their_sockets_and_descriptors(
    start_service: StartService,
) -> None:
    send_timeout = 0.5
    service = start_service(WS_SEND_TIMEOUT=str(send_timeout))
    pid = service.proc.pid
    baseline = socket_count(pid)
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
        flood_until_blocked(ws)
    blocked_at = time.monotonic()
    seen = start
    for _ in flooders:  # each drop's own line, not the first one five times
        seen = service.wait_for_match(r"peer not reading", timeout=10, start=seen)[0] + 1
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
    assert wait_until(lambda: socket_count(pid) <= baseline, 5), (
        f"sockets {socket_count(pid)} > baseline {baseline}: {psutil.Process(pid).open_files()} "
        f"{psutil.Process(pid).net_connections('all')}"
    )
    report("slow_readers", flooders=5, send_timeout_s=send_timeout,
           sockets_open_after_last_block_s=round(gone_after, 2), sockets_baseline=baseline,
           sockets_after=socket_count(pid))
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


def _open_silent(port: int, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
    """``count`` connections that send ``first_bytes`` (maybe nothing) and then go quiet."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first_bytes:
            sock.sendall(first_bytes)
        sockets.append(sock)
    return sockets


def _closed_by_peer(sock: socket.socket) -> bool:
    """The server closed ``sock`` (EOF or reset waiting), without blocking on an open one."""
    if not select.select([sock], [], [], 0)[0]:
        return False  # nothing to read: still open
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def _welcome_and_health(service: ServiceProcess) -> float:
    """Seconds until a real client got its welcome and /health answered."""
    started = time.monotonic()
    with RawWebSocket(service.port, timeout=5) as ws:
        assert ws.handshake("/ws/echo") == 101
        outcome = ws.outcome(timeout=5)
        assert outcome.message is not None
        assert outcome.message["type"] == "welcome"
    assert json.loads(_get(service, "/health"))["status"] == "ok"
    return time.monotonic() - started


@pytest.mark.server("granian", "uvicorn")
def test_silent_and_half_request_sockets_do_not_lock_anyone_out(
    start_service: StartService,
) -> None:
    """300 silent + 100 half-request sockets: 128 of them used to block every new client until
    HTTP_HEADER_TIMEOUT reaped them. The client is served while every one of them is still
    open (so not thanks to the reaper), well before the header timeout."""
    header_timeout = 10
    service = start_service(HTTP_HEADER_TIMEOUT=str(header_timeout))
    idle = _open_silent(service.port, 300)
    half = _open_silent(service.port, 100, b"GET /ws/echo HT")
    try:
        waited = _welcome_and_health(service)
        report("silent_sockets", silent=300, half_request=100,
               welcome_and_health_s=round(waited, 3))
        reaped = [sock for sock in idle + half if _closed_by_peer(sock)]
        assert not reaped, f"{len(reaped)} silent sockets were reaped before the client got in"
        assert waited < header_timeout / 2
    finally:
        for sock in idle + half:
            sock.close()


@pytest.mark.server("granian", "uvicorn")
def test_header_timeout_reaps_silent_sockets_beyond_the_connection_pool(
    start_service: StartService,
) -> None:
    """More silent sockets than HTTP_MAX_CONNECTIONS: each is closed after HTTP_HEADER_TIMEOUT,
    so the accept queue moves a pool's worth per timeout and a new client behind them waits
    about ceil(silent / pool) timeouts: bounded, never forever (it used to be forever)."""
    header_timeout, pool = 1.0, 16
    service = start_service(HTTP_MAX_CONNECTIONS=str(pool),
                            HTTP_HEADER_TIMEOUT=str(header_timeout))
    silent = _open_silent(service.port, 40) + _open_silent(service.port, 10, b"GET / HTT")
    try:
        waited = _welcome_and_health(service)
        rounds = math.ceil(len(silent) / pool)
        report("silent_beyond_pool", silent=len(silent), pool=pool,
               header_timeout_s=header_timeout, new_client_waited_s=round(waited, 2))
        assert waited < rounds * header_timeout + 1.5, f"a new client waited {waited:.2f}s"
        # Every silent socket was closed by the server (EOF), none left hanging.
        closed = 0
        for sock in silent:
            sock.settimeout(header_timeout * 3 + 5)
            try:
                data = sock.recv(1024)
            except ConnectionResetError:
                data = b""
            closed += data == b""
        assert closed == len(silent)
    finally:
        for sock in silent:
            sock.close()


def test_role_limits_cap_what_one_address_can_hold_and_open(
    start_service: StartService, tmp_path: Path
) -> None:
    """Through the nginx role's site with its defaults (read from the role): one address opens
    burst + 1 WebSockets at once, then ``rate`` a second, and holds at most ``limit_conn``;
    past either it gets 429 (nginx's log names the limit), and another address is untouched."""
    defaults = yaml.safe_load((REPO / "infra/roles/nginx/defaults/main.yml").read_text())
    limit = int(defaults["nginx_limit_conn_per_address"])
    rate = int(defaults["nginx_limit_handshake_rate"])
    burst = int(defaults["nginx_limit_handshake_burst"])
    service = start_service()
    proxy = NginxProxy(tmp_path / "nginx", service.port, read_timeout=60, interval=30,
                       timeout=10, per_address_limits=True).start()
    try:
        # 1. A reconnect wave from one address, as fast as it can: the burst, then 429.
        statuses = []
        for _ in range(burst + 40):
            with RawWebSocket(proxy.port, source="127.0.0.3") as ws:
                statuses.append(ws.handshake("/ws"))
        assert set(statuses) <= {101, 429}, statuses
        assert 429 in statuses, statuses
        assert statuses.index(429) >= burst + 1, statuses
        proxy.wait_log(r"limiting requests", 5)
        # 2. One address holding connections: up to the limit, opened at the allowed rate.
        held: list[RawWebSocket] = []
        try:
            for _ in range(limit * 3):  # bounded: the rate refuses some on the way
                if len(held) == limit:
                    break
                ws = RawWebSocket(proxy.port, source="127.0.0.4")
                status = ws.handshake("/ws")
                if status == 101:
                    held.append(ws)
                    continue
                ws.close()
                assert status == 429, status
                time.sleep(1 / rate)  # the client's pace, as a rate-limited client backs off
            assert len(held) == limit
            assert proxy.nginx is not None
            mark = proxy.nginx.log.stat().st_size
            time.sleep(2 / rate)  # a token for the next handshake: only limit_conn can refuse it
            with RawWebSocket(proxy.port, source="127.0.0.4") as extra:
                assert extra.handshake("/ws") == 429
            proxy.wait_log(r"limiting connections by zone", 5, after=mark)
            # 3. Another address is untouched.
            with RawWebSocket(proxy.port, source="127.0.0.5") as other:
                assert other.handshake("/ws") == 101
        finally:
            for ws in held:
                ws.close()
        report("per_address_limits", held=limit, next_handshake=429, burst=burst,
               first_refused_at=statuses.index(429) + 1)
        assert json.loads(_get(service, "/health"))["status"] == "ok"
    finally:
        proxy.stop()


def _forwarded_for(service: ServiceProcess, client: str) -> str:
    """The forwarded_for of the connect line whose X-Forwarded-For ends with ``client``."""
    line = service.wait_for_line(
        r'WS_DIAGNOSTICS \{"event":"connect".*"forwarded_for":"[^"]*' + re.escape(client) + '"')
    return str(json.loads(line.split("WS_DIAGNOSTICS ", 1)[1])["forwarded_for"])


def test_behind_a_trusted_balancer_limits_and_logs_see_the_client(
    start_service: StartService, tmp_path: Path
) -> None:
    """nginx_trusted_proxies: the client address is read from the balancer's X-Forwarded-For,
    so each client behind it gets its own per-address limits; a sender that is not a trusted
    balancer is not believed."""
    defaults = yaml.safe_load((REPO / "infra/roles/nginx/defaults/main.yml").read_text())
    burst = int(defaults["nginx_limit_handshake_burst"])
    service = start_service()
    port = free_port()
    site = Site(port, (service.port,), per_address_limits=True,
                role_vars=json.dumps({"nginx_trusted_proxies": ["127.0.0.1/32"]}))
    text = render_sites([site])[0]
    assert "set_real_ip_from 127.0.0.1/32;" in text
    assert "real_ip_header X-Forwarded-For;" in text
    proxy = Nginx(tmp_path / "nginx", text, port).start()
    try:
        def handshake(client: str, source: str = "127.0.0.1") -> int:
            with RawWebSocket(port, source=source) as ws:
                return ws.handshake("/ws", {"X-Forwarded-For": client})

        assert handshake("198.51.100.7") == 101
        # nginx appends the client it determined: the rightmost address is that client.
        assert _forwarded_for(service, "198.51.100.7").split(", ")[-1] == "198.51.100.7"
        # One client behind the balancer spends its burst; the next client is untouched.
        statuses = [handshake("198.51.100.7") for _ in range(burst + 20)]
        assert 429 in statuses, statuses
        assert handshake("198.51.100.8") == 101
        # An untrusted sender's X-Forwarded-For is not believed: nginx sees its own address.
        assert handshake("203.0.113.9", source="127.0.0.9") == 101
        assert _forwarded_for(service, "127.0.0.9") == "203.0.113.9, 127.0.0.9"
    finally:
        proxy.stop()


def test_behind_a_proxy_protocol_balancer_the_header_names_the_client(
    start_service: StartService, tmp_path: Path
) -> None:
    """nginx_proxy_protocol: the listener takes the PROXY header of a trusted layer-4 balancer
    and the client it names is the one nginx and the service see; a connection without the
    header is not served."""
    service = start_service()
    port = free_port()
    site = Site(port, (service.port,), per_address_limits=True, role_vars=json.dumps(
        {"nginx_trusted_proxies": ["127.0.0.1/32"], "nginx_proxy_protocol": True}))
    text = render_sites([site])[0]
    assert "real_ip_header proxy_protocol;" in text
    assert f"listen 127.0.0.1:{port} proxy_protocol reuseport;" in text
    proxy = Nginx(tmp_path / "nginx", text, port).start()
    try:
        with RawWebSocket(port) as ws:
            ws.sock.sendall(b"PROXY TCP4 198.51.100.20 127.0.0.1 40000 80\r\n")
            assert ws.handshake("/ws") == 101
        assert _forwarded_for(service, "198.51.100.20").split(", ")[-1] == "198.51.100.20"
        with RawWebSocket(port) as ws:
            assert ws.handshake("/ws") == 0  # no PROXY header: nginx closes, nothing served
        proxy.wait_log(r"broken header", 5)
    finally:
        proxy.stop()
