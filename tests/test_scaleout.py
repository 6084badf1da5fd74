"""What a rolling deploy needs from one instance: drain with 503, then 1001; and ``shed N``.

nginx retries a handshake answered 503 on another backend (``proxy_next_upstream http_503``),
so an instance that is going away must refuse new clients with 503 while it says goodbye to
its own. After a rolling restart the instance restarted last is empty; ``ws-kit-ctl shed``
moves clients to it (playbooks/rebalance.yml).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from testkit.fleet import FleetRun
from testkit.nginx import NginxProxy
from testkit.paths import VENV_BIN
from testkit.rawws import RawWebSocket, encode_frame
from testkit.service import ServiceProcess, StartService

CTL = str(VENV_BIN / "ws-kit-ctl")


def _ctl(path: Path, *command: str) -> dict[str, object]:
    proc = subprocess.run([CTL, str(path), *command], capture_output=True, text=True,
                          timeout=10, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    value: dict[str, object] = json.loads(proc.stdout)
    return value


def _health(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _two_instances_held(start_service: StartService, tmp_path: Path, clients: int,
                        ) -> tuple[ServiceProcess, ServiceProcess, NginxProxy, FleetRun,
                                   dict[int, int]]:
    """Two instances behind the nginx role's site, ``clients`` reconnecting clients connected
    through it; how many each instance holds."""
    a, b = start_service(), start_service()
    proxy = NginxProxy(tmp_path / "nginx", [a.port, b.port], read_timeout=8, interval=0.4,
                       timeout=0.2).start()
    fleet = FleetRun(tmp_path, f"{proxy.url}/ws/health", clients, "--max-seconds", "120")
    try:
        fleet.wait_status(lambda s: s["connected"] == clients, 30)
    except BaseException:
        fleet.log.stop()
        proxy.stop()
        raise
    held = {port: int(str(_health(port)[1]["connections"])) for port in (a.port, b.port)}
    return a, b, proxy, fleet, held


def _handshake_status(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(
            b"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def test_draining_instance_answers_503_to_handshakes_and_health(
    start_service: StartService,
) -> None:
    # A peer that never reads keeps the server's close frame from being delivered, which holds
    # the instance in its draining phase for WS_SEND_TIMEOUT: long enough to look at it.
    service = start_service(WS_SEND_TIMEOUT="3", WS_SHUTDOWN_TIMEOUT="3")
    stuck = RawWebSocket(service.port)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.handshake("/ws")
    frame = encode_frame(0x1, json.dumps({"type": "bulk", "data": "x" * 60_000}).encode())
    stuck.sock.settimeout(0.5)
    blocked = False
    for _ in range(400):  # bounded: 24 MB at most
        try:
            stuck.sock.sendall(frame)
        except TimeoutError:
            blocked = True  # both directions are full: the server's send is stuck
            break
    assert blocked, "the server kept reading without blocking"
    assert _health(service.port)[0] == 200
    start = len(service.lines)
    service.proc.send_signal(signal.SIGTERM)
    service.wait_for_line(r"draining: new handshakes get 503", timeout=5, start=start)
    status, body = _health(service.port)
    assert (status, body["status"]) == (503, "draining"), body
    assert _handshake_status(service.port) == 503
    service.wait_for_line(r'"event":"rejected".*"status":503.*"reason":"draining"', timeout=5)
    # The stuck peer's close could not be delivered: its TCP connection is shut down, not kept.
    line = service.wait_for_line(r'"event":"close","endpoint":"/ws"', timeout=10, start=start)
    assert '"code":1001' in line, line
    assert re.search(r'"tcp":"(shut_down|gone)"', line), line
    peer_port = stuck.sock.getsockname()[1]
    assert not any(c.raddr and c.raddr.port == peer_port
                   for c in psutil.Process(service.proc.pid).net_connections("tcp")), (
        "the undeliverable peer's socket is still open"
    )
    assert service.proc.wait(10) == 0
    stuck.sock.close()


def test_control_socket_reports_and_sheds_the_newest_clients(
    start_service: StartService, tmp_path: Path
) -> None:
    path = tmp_path / "control.sock"
    service = start_service(WS_CONTROL_SOCKET=str(path))
    assert path.stat().st_mode & 0o777 == 0o660

    async def scenario() -> list[tuple[int, str]]:
        clients = []
        for _ in range(5):
            ws = await connect(f"{service.ws}/ws/echo", ping_interval=None)
            await ws.recv()  # welcome
            clients.append(ws)
        assert _ctl(path, "status") == {"connections": 5, "draining": False}
        shed = await asyncio.to_thread(_ctl, path, "shed", "2")
        assert shed == {"asked": 2, "shed": 2, "connections": 5}, shed
        closes: list[tuple[int, str]] = []
        for ws in clients[-2:]:  # the newest two
            try:
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            except ConnectionClosed as closed:
                rcvd = closed.rcvd
                closes.append((rcvd.code, rcvd.reason) if rcvd else (1006, ""))
        for ws in clients[:3]:
            assert ws.close_code is None
        deadline = time.monotonic() + 5
        while _ctl(path, "status")["connections"] != 3:
            assert time.monotonic() < deadline, "shed clients still counted"
            await asyncio.sleep(0.05)
        for ws in clients[:3]:
            await ws.close()
        return closes

    closes = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert closes == [(1001, "rebalancing: reconnect")] * 2
    proc = subprocess.run([CTL, str(path), "reboot"], capture_output=True, text=True,
                          timeout=10, check=False)
    assert proc.returncode == 1
    assert "status" in proc.stdout


def test_unusable_control_socket_path_stops_start_up(start_service: StartService) -> None:
    service = start_service(WS_CONTROL_SOCKET="/nonexistent/dir/control.sock", ready=None)
    assert service.proc.wait(20) == 2
    assert "WS_CONTROL_SOCKET=/nonexistent/dir/control.sock" in service.output()


def test_restarting_one_of_two_instances_behind_the_roles_nginx_costs_clients_no_handshake(
    start_service: StartService, tmp_path: Path
) -> None:
    """The rolling restart in miniature: 40 reconnecting clients through the nginx role's site
    (least_conn, proxy_next_upstream) over two instances; one is restarted. Every close is
    1001, no client ever sees a failed handshake (nginx retried it on the other instance),
    each is back within 5 s. The full version, with Ansible, is infra/molecule/rolling."""
    clients = 40
    a, _, proxy, fleet, held = _two_instances_held(start_service, tmp_path, clients)
    try:
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(15) == 0
        back = fleet.wait_status(lambda s: s["connected"] == clients and s["closes"] > 0, 30)
        restarted = start_service(PORT=str(a.port))
        report = fleet.finish()
    finally:
        fleet.log.stop()
        proxy.stop()
    report_line = {k: report[k] for k in ("closes_by_code", "handshake_failures", "max_gap_s")}
    print(f"SCALEOUT {json.dumps({'held_before': held, **report_line})}")
    assert all(count > 0 for count in held.values()), held  # least_conn used both
    assert back["clients"] == clients
    assert report["closes_by_code"] == {"1001": held[a.port]}, report
    assert report["handshake_failures"] == {}, report["handshake_failures"]
    assert report["max_gap_s"] < 5.0
    assert report["still_connected_at_stop"] == clients
    assert restarted.proc.poll() is None


def test_an_instance_killed_at_its_memory_bound_costs_only_its_own_clients(
    start_service: StartService, tmp_path: Path
) -> None:
    """What the other instances' clients see when one instance passes its ``MemoryMax=``: the
    kernel ends that process alone with SIGKILL (sent here by hand: this machine's memory
    cgroup is read-only, docs/deploy.md#hardening). Its clients see 1006, nothing says
    goodbye, and reconnect through nginx to the other instance; the other instance's clients
    see nothing at all, and no handshake fails."""
    clients = 40
    a, b, proxy, fleet, held = _two_instances_held(start_service, tmp_path, clients)
    try:
        a.proc.send_signal(signal.SIGKILL)
        assert a.proc.wait(15) == -signal.SIGKILL
        fleet.wait_status(lambda s: s["connected"] == clients and s["closes"] >= held[a.port], 30)
        on_b = int(str(_health(b.port)[1]["connections"]))
        report = fleet.finish()
    finally:
        fleet.log.stop()
        proxy.stop()
    print(f"MEMORY_BOUND_KILL {json.dumps({'held_before': held, **report['closes_by_code']})}")
    assert all(count > 0 for count in held.values()), held
    # Only the killed instance's clients were cut, once each; the others kept their sockets.
    assert report["closes_by_code"] == {"1006": held[a.port]}, report
    assert report["handshake_failures"] == {}, report["handshake_failures"]
    assert report["still_connected_at_stop"] == clients
    assert on_b == clients
