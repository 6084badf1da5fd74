"""The service and ws-smoke against a real headless Chromium (``apt-get install -y chromium``).

Pages are served from 127.0.0.1 by ``tests.browser_support.PageServer``; Chromium resolves
nothing but loopback names (``--host-resolver-rules``), so all traffic stays on 127.0.0.1.
Each test waits on processes and log lines, never on a sleep.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

from smoke.checks import mixed_content
from smoke.model import Report
from smoke.runner import run_checks
from smoke.target import Options, parse_target
from tests.browser_support import PAYLOAD_TYPE, BrowserRun, PageServer, run_chromium, tls_context
from tests.conftest import ServiceProcess, StartService, free_port

BLOCKED = ("SecurityError: Failed to construct 'WebSocket': An insecure WebSocket connection "
           "may not be initiated from a page loaded over HTTPS.")
SMOKE = Options(timeout=5.0, quick=True, grace=1.0, latency_samples=3)


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
                      latency_samples=SMOKE.latency_samples, origin=origin)
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
