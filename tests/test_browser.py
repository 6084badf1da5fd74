"""The service and ws-smoke against a real headless Chromium (``apt-get install -y chromium``).

Pages are served from 127.0.0.1 by ``testkit.browser.PageServer`` (or by the service:
``/ws-check``); Chromium resolves nothing but loopback names (``--host-resolver-rules``), so all
traffic stays on 127.0.0.1. Each test waits on processes, log lines and the page's own events
(the check page's ``ws-check-done``, awaited over the DevTools protocol), never on a sleep.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import socket
from pathlib import Path
from typing import Any

import pytest

from service.check_page import PATH, content_security_policy, render
from service.settings import load_settings
from smoke.browser import mixed_content
from smoke.model import Report
from smoke.runner import run_checks
from smoke.target import Options, parse_target
from testkit.browser import (
    FOREIGN_HOST,
    PAYLOAD_TYPE,
    BrowserRun,
    Chromium,
    PageServer,
    run_chromium,
    tls_context,
)
from testkit.nginx import Nginx, NginxProxy
from testkit.paths import VENV_BIN
from testkit.ports import free_port, wait_for_port
from testkit.rawws import RawWebSocket, flood_until_blocked
from testkit.service import ServiceProcess, StartService
from testkit.smoke_cli import BEHAVIOUR_LATENCY_LIMIT_MS

BLOCKED = ("SecurityError: Failed to construct 'WebSocket': An insecure WebSocket connection "
           "may not be initiated from a page loaded over HTTPS.")
SMOKE = Options(timeout=5.0, quick=True, grace=1.0, latency_samples=3,
                latency_limit_ms=float(BEHAVIOUR_LATENCY_LIMIT_MS))


def _payload() -> dict[str, str]:
    return {"type": PAYLOAD_TYPE, "nonce": secrets.token_hex(8)}


def _diagnostics(service: ServiceProcess, pattern: str) -> dict[str, Any]:
    line = service.wait_for_line(r"WS_DIAGNOSTICS \{" + pattern)
    fields: dict[str, Any] = json.loads(line.split("WS_DIAGNOSTICS ", 1)[1])
    return fields


def _assert_echoed(attempt: dict[str, Any], payload: dict[str, str]) -> str:
    """welcome, the payload echoed, a clean 1000 close by the page; returns the client_id."""
    assert "thrown" not in attempt, attempt
    assert attempt["events"] == ["open"], attempt
    welcome = attempt["messages"][0]
    assert welcome["type"] == "welcome", attempt
    assert welcome["endpoint"] == "/ws/echo"
    echoes = [m for m in attempt["messages"] if m["type"] == "echo"]
    assert len(echoes) == 1, attempt
    assert echoes[0]["original"] == payload
    assert echoes[0]["client_id"] == welcome["client_id"]
    assert attempt["close"] == {"code": 1000, "clean": True, "reason": "done"}, attempt
    client_id: str = welcome["client_id"]
    return client_id


def _smoke(service: ServiceProcess, origin: str) -> Report:
    """ws-smoke's whole --quick run against the service, from the page's Origin."""
    options = Options(timeout=SMOKE.timeout, quick=True, grace=SMOKE.grace,
                      latency_samples=SMOKE.latency_samples,
                      latency_limit_ms=SMOKE.latency_limit_ms, origin=origin)
    return asyncio.run(run_checks(parse_target(service.ws), options))


def _verdict(report: Report) -> tuple[str, str]:
    result = next(r for r in report.results if r.name == "mixed_content")
    return result.status, result.detail


def test_page_on_allowed_origin_gets_welcome_echo_and_clean_close(
        start_service: StartService, tmp_path: Path) -> None:
    payload = _payload()
    with PageServer() as page:
        service = start_service(ALLOWED_ORIGINS=page.origin)
        url = f"{service.ws}/ws/echo"
        page.show([url], payload)
        run = run_chromium(page.url, tmp_path / "profile")
    client_id = _assert_echoed(run.attempt(url), payload)
    connect = _diagnostics(service, r'"event":"connect","endpoint":"/ws/echo"')
    assert connect["origin"] == page.origin
    assert connect["client_id"] == client_id
    close = _diagnostics(service, r'"event":"close","endpoint":"/ws/echo"')
    assert (close["client_id"], close["code"], close["closed_by"]) == (client_id, 1000, "client")
    assert close["messages_in"] == 1
    assert run.console_about(url) == [], run.console


def test_page_on_foreign_origin_is_refused_with_403(start_service: StartService,
                                                    tmp_path: Path) -> None:
    with PageServer() as page:
        allowed = f"http://127.0.0.1:{free_port()}"  # same scheme and host, another port
        service = start_service(ALLOWED_ORIGINS=allowed)
        url = f"{service.ws}/ws/echo"
        page.show([url], _payload())
        run = run_chromium(page.url, tmp_path / "profile")
    attempt = run.attempt(url)
    assert "thrown" not in attempt, attempt
    assert attempt["events"] == ["error"], attempt  # never opened
    assert attempt["messages"] == []
    assert attempt["close"] == {"code": 1006, "clean": False, "reason": ""}, attempt
    rejected = _diagnostics(service, r'"event":"rejected"')
    assert rejected["status"] == 403
    assert rejected["reason"] == "origin not allowed"
    assert rejected["origin"] == page.origin
    assert rejected["endpoint"] == "/ws/echo"
    # JavaScript never sees the 403 (only error + 1006): the service's log is where it shows.
    assert '"event":"connect"' not in service.output()


def _mixed_content_page(start_service: StartService, tmp_path: Path, ws_public_host: str,
                        hosts: list[str]) -> tuple[PageServer, ServiceProcess, BrowserRun,
                                                   dict[str, str], list[str]]:
    """An https page (self-signed, on 127.0.0.1) opening ws://HOST:PORT/ws/echo for each host,
    against a service whose PUBLIC_BASE_URL is that page and WS_PUBLIC_URL uses
    ``ws_public_host``: the same configuration Chromium and ws-smoke are asked about."""
    port = free_port()
    payload = _payload()
    page = PageServer(tls_context(tmp_path))
    try:
        service = start_service(PORT=str(port), ALLOWED_ORIGINS=page.origin,
                                PUBLIC_BASE_URL=page.origin,
                                WS_PUBLIC_URL=f"ws://{ws_public_host}:{port}/ws/echo")
        urls = [f"ws://{host}:{port}/ws/echo" for host in hosts]
        page.show(urls, payload)
        run = run_chromium(page.url, tmp_path / "profile")
    finally:
        page.close()
    return page, service, run, payload, urls


def test_https_page_may_open_loopback_ws_and_ws_smoke_agrees(
        start_service: StartService, tmp_path: Path) -> None:
    opened = ["127.0.0.1", "localhost", "app.localhost"]  # Chromium maps *.localhost itself
    page, service, run, payload, urls = _mixed_content_page(
        start_service, tmp_path, "127.0.0.1", [*opened, "[::1]"])
    for host, url in zip(opened, urls, strict=False):
        _assert_echoed(run.attempt(url), payload)
        assert mixed_content(url, page.url, "the page") == (
            "pass", f"ws_public_url={url} is ws:// while the page is https, but {host} is "
                    "loopback: browsers treat loopback as potentially trustworthy (W3C Secure "
                    "Contexts), so an https page may open it")
    # [::1] is not blocked either: the constructor does not throw and the socket is tried
    # (and refused: the service listens on 127.0.0.1 only).
    ipv6 = run.attempt(urls[-1])
    assert "thrown" not in ipv6, ipv6
    assert "close" in ipv6, ipv6
    assert (mixed_content(urls[-1], page.url, "the page") or ("",))[0] == "pass"
    # Not even a mixed content warning for loopback (Chromium warns for 0.0.0.0, say).
    assert not [line for line in run.console if "Mixed Content" in line], run.console
    for _ in opened:
        assert _diagnostics(service, r'"event":"connect"')["origin"] == page.origin

    # ws-smoke on the very same service (PUBLIC_BASE_URL https, WS_PUBLIC_URL ws://127.0.0.1).
    report = _smoke(service, page.origin)
    status, detail = _verdict(report)
    assert status == "pass", detail
    assert "127.0.0.1 is loopback" in detail
    assert f"public_base_url {page.origin} is https" in detail
    assert "mixed_content" not in [d.code for d in report.diagnoses]


def test_https_page_may_not_open_other_ws_and_ws_smoke_agrees(
        start_service: StartService, tmp_path: Path) -> None:
    page, service, run, _, urls = _mixed_content_page(
        start_service, tmp_path, "other.invalid", ["other.invalid", "localhost.invalid"])
    for url in urls:
        attempt = run.attempt(url)
        # Blocked in the constructor, before any DNS lookup or connection: no events at all.
        assert attempt.get("thrown") == BLOCKED, attempt
        assert attempt["events"] == [], attempt
        assert "close" not in attempt, attempt
        blocked = run.console_about(url)
        assert any("This request has been blocked" in line for line in blocked), run.console
        verdict = mixed_content(url, page.url, "the page")
        assert verdict == ("fail", f"ws_public_url={url} is ws:// while the page is https")
    assert '"event":"connect"' not in service.output()  # nothing reached the service

    # ws-smoke on the very same service (WS_PUBLIC_URL ws://other.invalid:PORT/ws/echo).
    report = _smoke(service, page.origin)
    status, detail = _verdict(report)
    assert status == "fail", detail
    assert detail == (f"ws_public_url={urls[0]} is ws:// while public_base_url {page.origin} "
                      "is https")
    diagnosis = next(d for d in report.diagnoses if d.code == "mixed_content")
    assert "unless the host is loopback" in diagnosis.cause
    assert [d.code for d in report.diagnoses] == ["mixed_content"]


# --- the browser check page, GET /ws-check ----------------------------------------------------

CHECKS = ["mixed_content", "handshake", "echo_welcome", "echo_roundtrip", "latency",
          "normal_close", "ws_ping_pong", "ws_echo", "health_status", "config", "heartbeat",
          "sustained"]
SUSTAIN = 2  # seconds; with the fixture's 0.4 s heartbeats: about five on each socket
# p95 limit of the round trips: 100 ms by default, loose here (2 busy cores shared with the
# browser, nginx and other tests); the check and its arithmetic are the same.
QUERY = f"?sustain={SUSTAIN}&latency_limit=1000"


def _check_page(url: str, profile: Path) -> tuple[dict[str, Any], list[str]]:
    """Load the check page in headless Chromium; its report once the page says it is done."""
    with Chromium(profile) as browser:
        browser.open(url)
        report = browser.report(timeout=SUSTAIN + 60)
        return report, browser.console


def _statuses(report: dict[str, Any]) -> dict[str, str]:
    assert [c["name"] for c in report["checks"]] == CHECKS, report["checks"]
    return {c["name"]: c["status"] for c in report["checks"]}


def _assert_all_pass(report: dict[str, Any], console: list[str], target: str) -> None:
    failed = [c for c in report["checks"] if c["status"] != "pass"]
    assert not failed, json.dumps(report, indent=1)
    assert report["verdict"]["status"] == "pass"
    assert report["verdict"]["codes"] == []
    assert report["target"] == target
    assert report["sustain_s"] == SUSTAIN
    assert report["latency_limit_ms"] == 1000
    # Heartbeats on the held sockets, each with its gap, all answered (the server counted them).
    beats = [b for b in report["heartbeats"] if b["endpoint"] == "/ws/health"]
    assert len(beats) >= 3, report["heartbeats"]
    assert [b["ping_number"] for b in beats] == list(range(1, len(beats) + 1))
    # Each gap is one heartbeat interval: above half of it (no doubled heartbeat) and within
    # the page's own limit, interval + grace (the interval clamped to 1-5 s), past which its
    # sustained check would have failed.
    interval = report["server_config"]["ping_interval"]
    limit = interval + min(5, max(1, interval))
    assert all(interval / 2 < b["gap_s"] <= limit for b in beats), (interval, beats)
    assert any(b["endpoint"] == "/ws" for b in report["heartbeats"]), report["heartbeats"]
    assert "pong_count" in next(c for c in report["checks"] if c["name"] == "sustained")["detail"]
    closes = {c["endpoint"]: c for c in report["closes"]}
    assert set(closes) == {"/ws/echo", "/ws/health", "/ws"}
    for close in closes.values():
        assert (close["code"], close["wasClean"], close["closed_by"]) == (1000, True, "page")
        assert close["meaning"].startswith("normal closure")
    assert report["latency_ms"]["samples"] == 20
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"]
    # The page's strict CSP allowed everything it needed: nothing was refused or thrown.
    assert not [line for line in console if "Content Security Policy" in line or
                line.startswith("exception")], console


def _connects(service: ServiceProcess, count: int) -> list[dict[str, Any]]:
    found = []
    start = 0
    for _ in range(count):
        line = service.wait_for_line(r'WS_DIAGNOSTICS \{"event":"connect"', start=start)
        start = service.lines.index(line) + 1
        found.append(json.loads(line.split("WS_DIAGNOSTICS ", 1)[1]))
    return found


def test_check_page_direct_passes_every_check_from_its_own_origin(
        start_service: StartService, tmp_path: Path) -> None:
    """Served by the service at its default PUBLIC_BASE_URL (http://localhost:PORT): that origin
    is accepted without being in ALLOWED_ORIGINS (the defaults, ports 3000)."""
    service = start_service()
    origin = f"http://localhost:{service.port}"
    report, console = _check_page(f"{origin}{PATH}{QUERY}", tmp_path / "profile")
    _assert_all_pass(report, console, f"ws://localhost:{service.port}")
    assert report["origin"] == origin
    config = report["server_config"]
    assert (config["ping_interval"], config["ping_timeout"]) == (0.4, 0.2)
    connects = _connects(service, 3)
    assert {c["endpoint"] for c in connects} == {"/ws/echo", "/ws/health", "/ws"}
    assert {c["origin"] for c in connects} == {origin}
    closes = [json.loads(line.split("WS_DIAGNOSTICS ", 1)[1]) for line in service.lines
              if '"event":"close"' in line]
    held = [c for c in closes if c["endpoint"] in ("/ws/health", "/ws")]
    assert len(held) == 2, closes
    assert all(c["pongs_received"] >= 3 for c in held), closes


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_readmes_plain_granian_command_is_the_service(
        start_service: StartService, tmp_path: Path, host: str) -> None:
    """README's ``granian --interface asgi --factory service.app:create_app``, word for word
    (its port from GRANIAN_PORT, as Granian reads it; PORT says another): the service learns
    where it serves from Granian, so /ws-check passes from its own origin, either loopback name,
    and a slow reader's socket is shut down (the descriptor lookup finds it)."""
    port = free_port()
    service = start_service(
        argv=[str(VENV_BIN / "granian"), "--interface", "asgi", "--factory",
              "service.app:create_app"],
        GRANIAN_PORT=str(port), WS_SEND_TIMEOUT="0.5", ready=None)
    assert service.port != port
    wait_for_port(port)
    origin = f"http://{host}:{port}"
    report, console = _check_page(f"{origin}{PATH}{QUERY}", tmp_path / "profile")
    _assert_all_pass(report, console, f"ws://{host}:{port}")
    assert report["origin"] == origin

    ws = RawWebSocket(port)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert ws.handshake("/ws") == 101
    start = len(service.lines)
    flood_until_blocked(ws)
    line = service.wait_for_line(r"peer not reading", timeout=10, start=start)
    assert '"tcp":"shut_down"' in line, line
    ws.close()


def test_check_page_through_the_nginx_roles_site_passes_every_check(
        start_service: StartService, tmp_path: Path) -> None:
    """Through the nginx role's rendered site (it proxies /ws-check), PUBLIC_BASE_URL being the
    proxy's address, as in a deployment."""
    proxy = NginxProxy(tmp_path / "nginx", backend=0, interval=0.4, timeout=0.2)
    public = f"http://127.0.0.1:{proxy.port}"
    service = start_service(PUBLIC_BASE_URL=public, WS_PUBLIC_URL=f"ws://127.0.0.1:{proxy.port}/ws")
    proxy.backend = service.port
    proxy.start()
    try:
        report, console = _check_page(f"{public}{PATH}{QUERY}", tmp_path / "profile")
    finally:
        proxy.stop()
    _assert_all_pass(report, console, f"ws://127.0.0.1:{proxy.port}")
    assert report["environment"]["public_base_url"] == public
    connects = _connects(service, 3)
    assert {c["origin"] for c in connects} == {public}
    assert {c["forwarded_for"] for c in connects} == {"127.0.0.1"}  # nginx was in between


def test_check_page_over_https_with_a_ws_url_to_another_host_diagnoses_mixed_content(
        tmp_path: Path) -> None:
    """The page as the service serves it (same bytes, same CSP), over https, told to check
    ws://ws-check.invalid: Chromium blocks it in the constructor, before any lookup."""
    page = render(load_settings({})).encode()
    headers = {"Content-Security-Policy": content_security_policy(page.decode())}
    with PageServer(tls_context(tmp_path)) as server:
        server.serve(page, headers)
        report, console = _check_page(
            f"{server.url}?url=ws://ws-check.invalid&sustain={SUSTAIN}", tmp_path / "profile")
    statuses = _statuses(report)
    assert statuses["mixed_content"] == "fail"
    assert statuses["handshake"] == "fail"
    assert {s for name, s in statuses.items()
            if name not in ("mixed_content", "handshake")} == {"skip"}, statuses
    handshake = next(c for c in report["checks"] if c["name"] == "handshake")
    assert "SecurityError" in handshake["detail"], handshake
    assert report["verdict"]["status"] == "fail"
    assert report["verdict"]["codes"] == ["mixed_content"], report["verdict"]
    diagnosis = report["verdict"]["diagnoses"][0]
    assert "ws://ws-check.invalid/ws/echo" in diagnosis["cause"]
    assert "unless the host is loopback" in diagnosis["cause"]
    assert diagnosis["next_step"].startswith("Use a wss:// URL")
    assert report["closes"] == []
    assert report["heartbeats"] == []
    assert any("Mixed Content" in line or "insecure WebSocket" in line
               for line in console), console


def test_check_page_on_a_foreign_origin_diagnoses_the_origin(
        start_service: StartService, tmp_path: Path) -> None:
    """The page loaded under a name that is neither PUBLIC_BASE_URL nor loopback (a DNS name
    that reaches the host): the service refuses the handshakes with 403, which the browser
    hides; the page names the cause from what the service told it."""
    service = start_service()
    page = f"http://{FOREIGN_HOST}:{service.port}"
    report, _ = _check_page(f"{page}{PATH}{QUERY}", tmp_path / "profile")
    statuses = _statuses(report)
    assert statuses["handshake"] == "fail", statuses
    assert report["verdict"]["codes"] == ["origin_forbidden"], report["verdict"]
    cause = report["verdict"]["diagnoses"][0]["cause"]
    assert f"this page's origin {page}" in cause
    assert f"PUBLIC_BASE_URL (http://localhost:{service.port})" in cause
    assert "http://localhost:3000" in cause
    closes = report["closes"]
    assert closes, report
    assert all(c["code"] == 1006 and not c["opened"] for c in closes), closes
    rejected = json.loads(service.wait_for_line(r'"event":"rejected"').split(
        "WS_DIAGNOSTICS ", 1)[1])
    assert (rejected["status"], rejected["origin"]) == (403, page)
    assert '"event":"connect"' not in service.output()


def test_check_page_behind_a_proxy_that_cuts_idle_sockets_diagnoses_the_idle_timeout(
        start_service: StartService, tmp_path: Path) -> None:
    """nginx with proxy_read_timeout 1 s (below the rule: the role's check is off for this)
    in front of 3 s heartbeats: the held sockets are cut with 1006 about 1 s after their last
    message, and the page says so in ws-smoke's words."""
    proxy = NginxProxy(tmp_path / "nginx", backend=0, interval=3, timeout=1, read_timeout=1,
                       check_rule=False)
    public = f"http://127.0.0.1:{proxy.port}"
    service = start_service(PUBLIC_BASE_URL=public, WS_PING_INTERVAL="3", WS_PING_TIMEOUT="1")
    proxy.backend = service.port
    proxy.start()
    try:
        report, _ = _check_page(f"{public}{PATH}?sustain=4&latency_limit=1000",
                                tmp_path / "profile")
    finally:
        proxy.stop()
    statuses = _statuses(report)
    quick = ["mixed_content", "handshake", "echo_welcome", "echo_roundtrip", "latency",
             "normal_close", "ws_ping_pong", "ws_echo", "health_status", "config"]
    assert {statuses[name] for name in quick} == {"pass"}, report["checks"]
    assert statuses["heartbeat"] == "fail"
    assert statuses["sustained"] == "fail"
    assert report["verdict"]["codes"] == ["proxy_idle_timeout"], report["verdict"]
    diagnosis = report["verdict"]["diagnoses"][0]
    assert re.search(r"proxy idle timeout of about (0\.9|1\.0|1\.1) s;", diagnosis["cause"]), (
        diagnosis)
    assert "server ping interval is 3 s" in diagnosis["cause"]
    assert set(diagnosis["checks"]) == {"heartbeat", "sustained"}
    dropped = [c for c in report["closes"] if c["endpoint"] == "/ws/health"]
    assert len(dropped) == 1
    assert (dropped[0]["code"], dropped[0]["wasClean"], dropped[0]["closed_by"]) == (
        1006, False, "network")
    assert 0.9 <= dropped[0]["idle_s"] < 2.5, dropped
    assert dropped[0]["meaning"].startswith("abnormal closure")


BROKEN_PROXY = """\
server {{
    listen 127.0.0.1:{port};
    location / {{
        # The classic mistake: no Upgrade / Connection headers passed on.
        proxy_pass http://127.0.0.1:{backend};
        proxy_http_version 1.1;
    }}
}}
"""


def _check_page_behind(site: str, start_service: StartService, tmp_path: Path,
                       ) -> tuple[ServiceProcess, dict[str, Any], list[str]]:
    """The check page loaded through nginx serving ``site`` (a template of port, backend)."""
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    service = start_service(PUBLIC_BASE_URL=public)
    proxy = Nginx(tmp_path / "nginx", site.format(port=port, backend=service.port), port)
    proxy.start()
    try:
        report, console = _check_page(f"{public}{PATH}{QUERY}", tmp_path / "profile")
    finally:
        proxy.stop()
    return service, report, console


def test_check_page_behind_a_proxy_that_drops_upgrade_infers_it(
        start_service: StartService, tmp_path: Path) -> None:
    """The browser sees only 1006; /health answering 200 through the same proxy, the endpoint
    not a 404, the origin allowed and no token set leave the Upgrade headers as the cause."""
    service, report, console = _check_page_behind(BROKEN_PROXY, start_service, tmp_path)
    assert _statuses(report)["handshake"] == "fail"
    assert report["verdict"]["codes"] == ["upgrade_not_forwarded"], report["verdict"]
    diagnosis = report["verdict"]["diagnoses"][0]
    assert "inferred" in diagnosis["cause"]
    assert "proxy_set_header Upgrade $http_upgrade" in diagnosis["next_step"]
    assert '"event":"connect"' not in service.output()
    # What the page cannot read, the browser's console shows: the proxy's answer was no 101.
    assert any("Error during WebSocket handshake" in line for line in console), console


def test_check_page_shows_a_server_restart_as_1001_going_away(
        start_service: StartService, tmp_path: Path) -> None:
    """SIGTERM while the page holds /ws/health and /ws: both get 1001, shown with its meaning
    for this service, and the verdict is the server's close, not a network drop."""
    service = start_service()
    with Chromium(tmp_path / "profile") as browser:
        browser.open(f"http://localhost:{service.port}{PATH}?sustain=60&latency_limit=1000")
        connects = _connects(service, 3)  # /ws/echo (done by now), then the two held sockets
        assert {c["endpoint"] for c in connects} == {"/ws/echo", "/ws/health", "/ws"}
        assert service.stop() == 0
        report = browser.report(timeout=30)
    statuses = _statuses(report)
    assert statuses["sustained"] == "fail", report["checks"]
    assert report["verdict"]["codes"] == ["server_closed"], (
        report["verdict"], report["closes"], service.output())
    held = [c for c in report["closes"] if c["endpoint"] in ("/ws/health", "/ws")]
    assert len(held) == 2, report["closes"]
    for close in held:
        assert (close["code"], close["wasClean"], close["closed_by"]) == (1001, True, "server")
        assert close["meaning"].startswith("going away - the server is restarting")
    assert report["duration_s"] < 30  # the drop ended the run, not the 60 s sustain


def test_check_page_over_https_may_check_a_loopback_ws_url(
        start_service: StartService, tmp_path: Path) -> None:
    """The same https page told to check ws://127.0.0.1:PORT: loopback is potentially
    trustworthy, so nothing is blocked and every check passes (the page's origin listed)."""
    page = render(load_settings({})).encode()
    headers = {"Content-Security-Policy": content_security_policy(page.decode())}
    with PageServer(tls_context(tmp_path)) as server:
        service = start_service(ALLOWED_ORIGINS=server.origin)
        server.serve(page, headers)
        report, console = _check_page(f"{server.url}{QUERY}&url={service.ws}", tmp_path / "p")
    _assert_all_pass(report, console, service.ws)
    mixed = next(c for c in report["checks"] if c["name"] == "mixed_content")
    assert mixed["detail"].endswith(
        f"but 127.0.0.1:{service.port} is loopback, which browsers allow"), mixed
    assert report["secure_context"] is True
    assert {c["origin"] for c in _connects(service, 3)} == {server.origin}


def test_check_page_shows_a_killed_server_as_backend_gone(
        start_service: StartService, tmp_path: Path) -> None:
    """SIGKILL while the page holds its sockets: no close frame (1006), and GET /health then
    finds nothing listening, so the page says the process died, not that a proxy cut it."""
    service = start_service()
    with Chromium(tmp_path / "profile") as browser:
        browser.open(f"http://localhost:{service.port}{PATH}?sustain=60&latency_limit=1000")
        _connects(service, 3)
        service.proc.kill()
        assert service.proc.wait(10) == -9
        report = browser.report(timeout=30)
    assert _statuses(report)["sustained"] == "fail", report["checks"]
    assert report["verdict"]["codes"] == ["backend_gone"], report["verdict"]
    assert "the server process died or restarted" in report["verdict"]["diagnoses"][0]["cause"]
    held = [c for c in report["closes"] if c["endpoint"] in ("/ws/health", "/ws")]
    assert {(c["code"], c["wasClean"], c["closed_by"]) for c in held} == {
        (1006, False, "network")}, report["closes"]
    assert report["duration_s"] < 30


def test_check_page_names_the_token_a_browser_cannot_send(
        start_service: StartService, tmp_path: Path) -> None:
    """WS_AUTH_TOKEN set: the handshakes get 401, which the browser hides; the page knows from
    the service that a token is required and says a terminal must check instead."""
    service = start_service(WS_AUTH_TOKEN=secrets.token_hex(16))
    report, _ = _check_page(f"http://localhost:{service.port}{PATH}{QUERY}",
                            tmp_path / "profile")
    assert _statuses(report)["handshake"] == "fail"
    assert report["verdict"]["codes"] == ["auth_required"], report["verdict"]
    assert "-H 'Authorization: Bearer TOKEN'" in report["verdict"]["diagnoses"][0]["next_step"]
    rejected = json.loads(service.wait_for_line(r'"event":"rejected"').split(
        "WS_DIAGNOSTICS ", 1)[1])
    assert rejected["status"] == 401


NO_WS_ROUTE = """\
server {{
    listen 127.0.0.1:{port};
    # The page and /health reach the service; the WebSocket paths were never routed.
    location /ws/ {{ return 404; }}
    location = /ws {{ return 404; }}
    location / {{
        proxy_pass http://127.0.0.1:{backend};
    }}
}}
"""


def test_check_page_behind_a_proxy_without_the_ws_route_says_not_found(
        start_service: StartService, tmp_path: Path) -> None:
    service, report, _ = _check_page_behind(NO_WS_ROUTE, start_service, tmp_path)
    assert _statuses(report)["handshake"] == "fail"
    assert report["verdict"]["codes"] == ["not_found"], report["verdict"]
    assert "HTTP 404 for " in report["verdict"]["diagnoses"][0]["cause"]
    assert '"event":"connect"' not in service.output()
