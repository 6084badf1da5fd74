"""ws-smoke against the real service and real, deliberately broken nginx setups on 127.0.0.1.

Every test asserts the diagnosis the operator would read, not just a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

import smoke.checks
import smoke.checks.health
from service.messages import Echo, Heartbeat, WsEcho
from smoke.__main__ import _options, check_parser
from smoke.browser import mixed_content
from smoke.model import Report
from smoke.probe import Probe
from smoke.recorder import Run
from smoke.runner import run_checks
from smoke.target import Options, parse_target
from testkit.paths import REPO
from testkit.ports import free_port
from testkit.service import StartService
from testkit.smoke_cli import (
    BEHAVIOUR_LATENCY_LIMIT_MS,
    Nginx,
    Service,
    launch_nginx,
    launch_service,
    run_smoke,
    smoke_env,
    start_smoke,
    stop,
)

ALL_CHECKS = {
    "http_health", "handshake", "echo_welcome", "echo_roundtrip", "latency", "normal_close",
    "ws_ping_pong", "ws_echo", "health_status", "config", "mixed_content", "heartbeat",
    "sustained", "origin_policy",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("smoke")


@pytest.fixture(scope="module")
def fast_service(workdir: Path) -> Iterator[Service]:
    """Heartbeat every 0.5 s (timeout 0.25 s), default allowed origins."""
    service = launch_service(workdir)
    yield service
    stop(service.proc)


@pytest.fixture(scope="module")
def slow_service(workdir: Path) -> Iterator[Service]:
    """Heartbeat every 2 s: slower than the 1 s proxy idle timeout below."""
    service = launch_service(workdir, WS_PING_INTERVAL="2", WS_PING_TIMEOUT="0.5")
    yield service
    stop(service.proc)


@pytest.fixture(scope="module")
def idle_timeout_proxy(workdir: Path, slow_service: Service) -> Iterator[Nginx]:
    """nginx set up for WebSockets, but with proxy_read_timeout 1s < the 2 s heartbeat."""
    nginx = launch_nginx(workdir, slow_service.port, read_timeout="1s")
    yield nginx
    stop(nginx.proc)


def test_healthy_service_passes_every_check(fast_service: Service, tmp_path: Path) -> None:
    junit = tmp_path / "smoke.xml"
    sustain = 2.0
    run = run_smoke(tmp_path, fast_service.url, "--sustain", str(sustain), "--grace", "1",
                    "--junit", str(junit))
    assert run.code == 0, run.out
    statuses = {r["name"]: r["status"] for r in run.report["results"]}
    assert statuses == dict.fromkeys(ALL_CHECKS, "pass"), run.out
    assert run.report["diagnoses"] == []
    assert run.report["counts"] == {"pass": len(ALL_CHECKS), "fail": 0, "skip": 0}
    # The run lasts the --sustain window, and no check waited out the default 10 s --timeout
    # after it (a reply or a close that never came would).
    assert sustain <= run.report["duration_s"] < sustain + Options().timeout
    sustained = run.result("sustained")
    assert sustained["metrics"]["heartbeats"] >= 3  # 0.5 s interval over 2 s
    assert sustained["evidence"]["close_code"] == 1000
    latency = run.result("latency")
    quantiles = latency["metrics"]
    assert quantiles["samples"] == 20
    # Ordered quantiles; the pass is the check's rule (p95 below the limit this run set:
    # run_smoke's BEHAVIOUR_LATENCY_LIMIT_MS, as the detail says), not this machine's speed.
    assert quantiles["p50_ms"] <= quantiles["p95_ms"] <= quantiles["p99_ms"]
    assert quantiles["p95_ms"] < float(BEHAVIOUR_LATENCY_LIMIT_MS)
    assert latency["detail"].endswith(f"(p95 < {BEHAVIOUR_LATENCY_LIMIT_MS} ms)"), latency
    assert "refused with HTTP 403" in run.result("origin_policy")["detail"]
    assert "14 passed, 0 failed, 0 skipped" in run.out

    root = ET.parse(junit).getroot()  # noqa: S314 - a file this test wrote
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("tests") == str(len(ALL_CHECKS))
    assert suite.get("failures") == "0"
    cases = suite.findall("testcase")
    assert {c.get("name") for c in cases} == ALL_CHECKS
    assert all(c.find("failure") is None for c in cases)



def test_the_latency_check_fails_above_its_limit_and_passes_below(
        fast_service: Service, tmp_path: Path) -> None:
    """The latency check both ways on one service: a 1 µs limit no loopback round trip meets
    fails it (slow_round_trips, exit 1, every other check still passing), and a limit above the
    p95 that run measured passes it. Without --latency-limit the limit is the operators' 100 ms."""
    slow = run_smoke(tmp_path, fast_service.url, "--quick", "--latency-limit", "0.001")
    assert slow.code == 1, slow.out
    latency = slow.result("latency")
    assert latency["status"] == "fail"
    p95 = latency["metrics"]["p95_ms"]
    assert p95 >= 0.001
    assert latency["detail"].endswith("(p95 >= 0.001 ms)"), latency
    assert slow.codes == ["slow_round_trips"], slow.out
    assert f"p95 {p95:.1f} ms" in slow.diagnosis("slow_round_trips")["cause"]
    failed = [r["name"] for r in slow.report["results"] if r["status"] == "fail"]
    assert failed == ["latency"], slow.out

    limit = f"{max(10 * p95, 1000):g}"
    fast = run_smoke(tmp_path, fast_service.url, "--quick", "--latency-limit", limit)
    assert fast.code == 0, fast.out
    assert fast.result("latency")["status"] == "pass"
    assert fast.result("latency")["detail"].endswith(f"(p95 < {limit} ms)")

    assert _options(check_parser().parse_args([fast_service.url])).latency_limit_ms == 100.0

def test_nothing_listening_is_exit_2_connection_refused(tmp_path: Path) -> None:
    port = free_port()
    run = run_smoke(tmp_path, f"ws://127.0.0.1:{port}", "--quick")
    assert run.code == 2, run.out
    diagnosis = run.diagnosis("connection_refused")
    assert f"127.0.0.1:{port}" in diagnosis["cause"]
    assert "not running" in diagnosis["cause"]
    assert f"curl http://127.0.0.1:{port}/health" in diagnosis["next_step"]
    assert set(diagnosis["checks"]) >= {"handshake", "health_status", "http_health"}
    assert run.codes == ["connection_refused"]
    assert "Diagnoses:" in run.out
    assert "[connection_refused]" in run.out


def test_usage_error_is_exit_2(tmp_path: Path) -> None:
    run = run_smoke(tmp_path, "ftp://127.0.0.1:1")
    assert run.code == 2
    assert "unsupported URL scheme 'ftp'" in run.err


def test_foreign_origin_gets_403_and_names_origin_and_allowed_list(
    fast_service: Service, tmp_path: Path,
) -> None:
    run = run_smoke(tmp_path, fast_service.url, "--quick", "--origin", "https://evil.invalid")
    assert run.code == 1, run.out
    diagnosis = run.diagnosis("origin_forbidden")
    assert "HTTP 403" in diagnosis["cause"]
    assert "Origin sent: https://evil.invalid" in diagnosis["cause"]
    # The allowed list comes from health_status, fetched without our refused Origin.
    assert "http://localhost:3000, http://127.0.0.1:3000" in diagnosis["cause"]
    # ... and the service's own public origin, accepted without being listed.
    assert f"localhost:{fast_service.port} (PUBLIC_BASE_URL)" in diagnosis["cause"]
    assert "ALLOWED_ORIGINS" in diagnosis["next_step"]
    assert run.result("handshake")["evidence"]["http_status"] == 403
    assert "HTTP 403" in run.result("handshake")["detail"]


def test_allowed_origin_passes(fast_service: Service, tmp_path: Path) -> None:
    run = run_smoke(tmp_path, fast_service.url, "--quick", "--origin", "http://localhost:3000",
                    "-H", "X-Smoke: 1")
    assert run.code == 0, run.out
    assert "sustained" not in {r["name"] for r in run.report["results"]}


def test_proxy_that_drops_origin_disables_the_origin_check(fast_service: Service,
                                                          workdir: Path,
                                                          tmp_path: Path) -> None:
    """``proxy_set_header Origin ""`` hides every browser's origin from the service, which then
    accepts a foreign page like a non-browser client: the README's "Foreign Origin accepted"."""
    nginx = launch_nginx(workdir, fast_service.port, strip_origin=True)
    try:
        run = run_smoke(tmp_path, nginx.url, "--quick")
    finally:
        stop(nginx.proc)
    assert run.code == 1, run.out
    assert run.codes == ["origin_not_enforced"], run.out
    diagnosis = run.diagnosis("origin_not_enforced")
    assert "was accepted (101) although allowed_origins is" in diagnosis["cause"]
    assert "passes the Origin header through unchanged" in diagnosis["next_step"]
    assert run.result("origin_policy")["status"] == "fail"
    direct = run_smoke(tmp_path, fast_service.url, "--quick")
    assert direct.code == 0, direct.out  # the service itself enforces it


def test_nginx_without_upgrade_headers(fast_service: Service, workdir: Path,
                                       tmp_path: Path) -> None:
    nginx = launch_nginx(workdir, fast_service.port, upgrade=False)
    try:
        junit = tmp_path / "broken.xml"
        run = run_smoke(tmp_path, nginx.url, "--quick", "--junit", str(junit))
    finally:
        stop(nginx.proc)
    assert run.code == 1, run.out
    diagnosis = run.diagnosis("upgrade_not_forwarded")
    assert "not forwarding the Upgrade and Connection headers" in diagnosis["cause"]
    assert "nginx" in diagnosis["cause"]
    assert "proxy_set_header Upgrade $http_upgrade" in diagnosis["next_step"]
    assert "proxy_set_header Connection $connection_upgrade" in diagnosis["next_step"]
    evidence = run.result("handshake")["evidence"]
    assert evidence["http_status"] in (400, 405, 426)
    assert run.result("http_health")["status"] == "pass"  # plain HTTP still goes through
    assert "HTTP 405 from nginx" in run.out or "HTTP 400 from nginx" in run.out

    root = ET.parse(junit).getroot()  # noqa: S314 - a file this test wrote
    failures = root.findall(".//testcase/failure")
    assert {f.get("type") for f in failures} == {"SmokeCheckFailed"}
    handshake = root.find(".//testcase[@name='handshake']/failure")
    assert handshake is not None
    assert handshake.text is not None
    assert "upgrade_not_forwarded" in handshake.text
    assert root.find(".//testcase[@name='echo_welcome']/skipped") is not None


def test_proxy_idle_timeout_names_seconds_and_direct_blames_proxy(
    idle_timeout_proxy: Nginx, slow_service: Service, tmp_path: Path,
) -> None:
    run = run_smoke(tmp_path, idle_timeout_proxy.url, "--sustain", "3", "--grace", "0.5",
                    "--direct", slow_service.url)
    assert run.code == 1, run.out
    idle = run.diagnosis("proxy_idle_timeout")
    assert re.search(r"proxy idle timeout of about 1(\.\d)? s", idle["cause"]), idle
    assert "server ping interval is 2 s" in idle["cause"]
    assert "Lower WS_PING_INTERVAL below 1" in idle["next_step"]
    assert "raise proxy_read_timeout above 2 s" in idle["next_step"]
    sustained = run.result("sustained")
    assert sustained["status"] == "fail"
    assert sustained["evidence"]["close_code"] == 1006
    assert 0.8 <= sustained["evidence"]["age_at_close_s"] < 1.8
    assert "close 1006" in run.out
    # The same checks straight to the backend pass: the proxy is at fault.
    assert run.result("sustained", via="direct")["status"] == "pass"
    assert run.result("heartbeat", via="direct")["status"] == "pass"
    proxy = run.diagnosis("proxy_configuration")
    assert "sustained" in proxy["checks"]
    assert "pass direct" in proxy["cause"]
    assert "backend_problem" not in run.codes


def test_watch_logs_each_drop_and_summarises(idle_timeout_proxy: Nginx) -> None:
    # Event-driven: read the log until the second drop's back-off, then stop with SIGTERM
    # (--duration only bounds a run that never gets there).
    watch = start_smoke("watch", idle_timeout_proxy.url, "--duration", "60")
    try:
        watch.wait_for_line(r"reconnecting in 1s", 60)
        watch.proc.send_signal(signal.SIGTERM)
        code = watch.finish(30)
    finally:
        watch.stop(signal.SIGKILL)
    stdout = watch.output()
    assert code == 1, stdout
    drops = re.findall(r"drop #\d+: code 1006 .* after (\d+\.\d+)s", stdout)
    assert len(drops) >= 2, stdout
    assert all(0.8 <= float(age) < 1.8 for age in drops), drops
    assert "reconnecting in 0.5s" in stdout
    summary = stdout.strip().splitlines()[-1]
    assert "drops by code: 1006 (abnormal closure, no close frame)" in summary
    assert "errors by kind: none" in summary
    assert re.search(r"(\d+) connection\(s\), \1 drop\(s\)", summary), summary


def test_watch_healthy_service_has_no_drop(fast_service: Service) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "smoke", "watch", fast_service.url, "--duration", "1.3"],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert "1 connection(s), 0 drop(s)" in summary
    assert "drops by code: none" in summary
    heartbeats = int(re.findall(r"(\d+) heartbeat\(s\)", summary)[0])
    assert heartbeats >= 2


def test_backend_down_behind_nginx_is_502_and_direct_confirms(workdir: Path,
                                                                tmp_path: Path) -> None:
    dead = free_port()
    nginx = launch_nginx(workdir, dead)
    try:
        run = run_smoke(tmp_path, nginx.url, "--quick", "--direct", f"ws://127.0.0.1:{dead}")
    finally:
        stop(nginx.proc)
    assert run.code == 1, run.out  # the proxy answered: reachable, but failing
    diagnosis = run.diagnosis("backend_unreachable")
    assert "HTTP 502" in diagnosis["cause"]
    assert "proxy is up but cannot reach the backend" in diagnosis["cause"]
    assert "proxy_pass" in diagnosis["next_step"]
    assert run.result("handshake")["evidence"]["http_status"] == 502
    refused = run.diagnosis("connection_refused")
    assert refused["checks"]
    assert all(c.startswith("direct:") for c in refused["checks"])
    assert "backend itself is at fault" in run.diagnosis("backend_problem")["cause"]
    assert "proxy_configuration" not in run.codes


def test_backend_that_never_answers_behind_nginx_is_504(workdir: Path, tmp_path: Path) -> None:
    """A backend that takes the connection and never answers (a hung process): nginx gives up
    at proxy_read_timeout with 504, and ws-smoke says what the README's 504 row quotes."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as hung:  # listens, never accepts
        nginx = launch_nginx(workdir, hung.getsockname()[1], read_timeout="1s")
        try:
            run = run_smoke(tmp_path, nginx.url, "--quick", "--timeout", "5")
        finally:
            stop(nginx.proc)
    assert run.code == 1, run.out
    diagnosis = run.diagnosis("backend_unreachable")
    assert "HTTP 504" in diagnosis["cause"]
    assert run.result("handshake")["evidence"]["http_status"] == 504


def test_heartbeats_slower_than_interval_plus_grace(slow_service: Service,
                                                   tmp_path: Path) -> None:
    run = run_smoke(tmp_path, slow_service.url, "--quick", "--heartbeat-interval", "0.5",
                    "--grace", "0.3")
    assert run.code == 1, run.out
    heartbeat = run.result("heartbeat")
    assert heartbeat["status"] == "fail"
    assert "no heartbeat within 0.5s interval + 0.3s grace" in heartbeat["detail"]
    # Gave up at interval + grace (0.8 s), not later when the server's 2 s heartbeat came
    # (nor at the 10 s --timeout).
    assert heartbeat["duration_s"] < 2.0
    diagnosis = run.diagnosis("no_heartbeat")
    assert "No heartbeat within 0.5 s interval + 0.3 s grace" in diagnosis["cause"]
    assert "ping_interval is 2 s, above the expected 0.5 s" in diagnosis["cause"]
    assert "WS_PING_INTERVAL" in diagnosis["next_step"]
    assert run.codes == ["no_heartbeat"]


def test_mixed_content_https_page_with_ws_public_url(workdir: Path, tmp_path: Path) -> None:
    service = launch_service(workdir, PUBLIC_BASE_URL="https://app.example.invalid",
                            WS_PUBLIC_URL="ws://app.example.invalid/ws")
    try:
        run = run_smoke(tmp_path, service.url, "--quick")
    finally:
        stop(service.proc)
    assert run.code == 1, run.out
    diagnosis = run.diagnosis("mixed_content")
    assert "ws_public_url=ws://app.example.invalid/ws is ws://" in diagnosis["cause"]
    assert "https://app.example.invalid" in diagnosis["cause"]
    assert "WS_PUBLIC_URL=wss://" in diagnosis["next_step"]
    assert "unless the host is loopback" in diagnosis["cause"]
    assert run.codes == ["mixed_content"]


@pytest.mark.parametrize("ws_public_url", ["ws://localhost:9410/ws", "ws://[::1]:9410/ws"])
def test_mixed_content_https_page_with_loopback_ws_public_url(
        workdir: Path, tmp_path: Path, ws_public_url: str) -> None:
    """Browsers let an https page open ws:// on loopback (a potentially trustworthy origin):
    ws-smoke passes it and says why (tests/test_browser.py checks this in Chromium)."""
    service = launch_service(workdir, PUBLIC_BASE_URL="https://app.example.invalid",
                            WS_PUBLIC_URL=ws_public_url)
    try:
        run = run_smoke(tmp_path, service.url, "--quick")
    finally:
        stop(service.proc)
    assert run.code == 0, run.out
    result = run.result("mixed_content")
    assert result["status"] == "pass"
    host = ws_public_url.split("//")[1].rsplit(":", 1)[0].strip("[]")
    assert f"is ws:// while public_base_url https://app.example.invalid is https, but {host} " \
        "is loopback" in result["detail"]
    assert "potentially trustworthy" in result["detail"]
    assert "mixed_content" not in run.codes


@pytest.mark.parametrize(("ws_url", "page_url", "status"), [
    # Potentially trustworthy (W3C Secure Contexts): loopback names and addresses.
    ("ws://localhost/ws", "https://app.example", "pass"),
    ("ws://LOCALHOST.:9000/ws", "https://app.example", "pass"),
    ("ws://app.localhost:9000/ws", "https://app.example", "pass"),
    ("ws://127.0.0.1:9000/ws", "https://app.example", "pass"),
    ("ws://127.255.255.254/ws", "https://app.example", "pass"),
    ("ws://127.1/ws", "https://app.example", "pass"),  # the URL parser's 127.0.0.1
    ("ws://0x7f.0.0.1/ws", "https://app.example", "pass"),
    ("ws://[::1]:9000/ws", "https://app.example", "pass"),
    ("ws://[0:0:0:0:0:0:0:1]/ws", "wss://app.example", "pass"),
    # Anything else is mixed content (Chromium warns about 0.0.0.0 and ::ffff:127.0.0.1).
    ("ws://app.example/ws", "https://app.example", "fail"),
    ("ws://app.example/ws", "wss://app.example", "fail"),
    ("ws://localhost.example/ws", "https://app.example", "fail"),
    ("ws://localhost../ws", "https://app.example", "fail"),
    ("ws://128.0.0.1/ws", "https://app.example", "fail"),
    ("ws://0.0.0.0/ws", "https://app.example", "fail"),
    ("ws://[::ffff:127.0.0.1]/ws", "https://app.example", "fail"),
    ("ws://[::2]/ws", "https://app.example", "fail"),
    ("ws://10.0.0.1/ws", "https://app.example", "fail"),
    # Nothing to judge: the page is not https, or the socket is wss://.
    ("ws://app.example/ws", "http://app.example", None),
    ("wss://app.example/ws", "https://app.example", None),
])
def test_mixed_content_verdict_is_the_browsers(ws_url: str, page_url: str,
                                               status: str | None) -> None:
    verdict = mixed_content(ws_url, page_url, f"public_base_url {page_url}")
    assert (verdict[0] if verdict else None) == status, verdict
    if verdict is not None:
        assert verdict[1].startswith(f"ws_public_url={ws_url} is ws:// while public_base_url "
                                     f"{page_url} is https")
        assert ("is loopback" in verdict[1]) == (status == "pass")


def test_any_origin_deployment_accepts_foreign_origin(workdir: Path, tmp_path: Path) -> None:
    service = launch_service(workdir, ALLOWED_ORIGINS="*")
    try:
        run = run_smoke(tmp_path, service.url, "--quick")
    finally:
        stop(service.proc)
    assert run.code == 0, run.out
    assert "ALLOWED_ORIGINS is *" in run.result("origin_policy")["detail"]


def test_ws_smoke_sh_falls_back_to_python_checker(fast_service: Service, tmp_path: Path) -> None:
    """No websocat, and wscat present but not interactive: the Python checker runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_wscat = bin_dir / "wscat"
    fake_wscat.write_text("#!/bin/sh\necho 'wscat must not run non-interactively' >&2\nexit 9\n")
    fake_wscat.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    report = tmp_path / "sh.json"
    done = subprocess.run(
        ["bash", str(REPO / "scripts/dev/ws_smoke.sh"), fast_service.url, "--quick",
         "--json", str(report)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "client: python (ws-smoke)" in done.stdout
    assert "websocat not found" in done.stdout
    assert "wscat" in done.stdout
    assert "not interactive" in done.stdout
    assert json.loads(report.read_text())["exit_code"] == 0


HEALTH_CONNECT = r'WS_DIAGNOSTICS \{"event":"connect","endpoint":"/ws/health"'


def test_proxy_environment_is_ignored_unless_asked(fast_service: Service,
                                                   tmp_path: Path) -> None:
    """http_proxy & co. must not silently redirect the checks (websockets and urllib both read
    them); with --use-env-proxy a broken proxy ends the run with a report, never a hang."""
    bad = "foo://127.0.0.1:1"
    env = smoke_env(http_proxy=bad, https_proxy=bad, all_proxy=bad, no_proxy="")
    run = run_smoke(tmp_path, fast_service.url, "--quick", env=env, timeout=60)
    assert run.code == 0, run.out + run.err
    assert all("proxy" not in (r.get("evidence") or {}) for r in run.report["results"])

    run = run_smoke(tmp_path, fast_service.url, "--quick", "--use-env-proxy", env=env,
                    timeout=60)
    assert run.code == 2, run.out + run.err  # the target was never reached
    handshake = run.result("handshake")
    assert handshake["evidence"]["proxy"] == bad
    assert handshake["evidence"]["error"] == "proxy"
    assert run.result("http_health")["evidence"]["proxy"] == bad
    assert run.result("origin_policy")["status"] == "skip"  # reported, not waited on forever
    assert "handshake" in run.diagnosis("proxy_error")["checks"]
    assert "tool_error" not in {r["name"] for r in run.report["results"]}


def test_crashed_backend_is_not_a_proxy_idle_timeout(start_service: StartService,
                                                    tmp_path: Path) -> None:
    """kill -9 of the service while /ws/health is connected (no heartbeat yet: 20 s interval)
    is a dead backend, not "a proxy idle timeout of about N s"."""
    service = start_service(WS_PING_INTERVAL="20", WS_PING_TIMEOUT="5")
    report = tmp_path / "crash.json"
    checker = start_smoke(service.ws, "--sustain", "30", "--json", str(report))
    try:
        # The origin-policy probe starts once the checker has read health_status, so its
        # refused handshake means the /ws/health connection is up and greeted.
        service.wait_for_line(r'"event":"rejected","endpoint":"/ws/health".*smoke-check',
                              timeout=30)
        service.proc.kill()  # SIGKILL: no close frames, the kernel resets the sockets
        code = checker.finish(120)
    finally:
        checker.stop(signal.SIGKILL)
    out = checker.output()
    assert code == 1, out
    data = json.loads(report.read_text())
    codes = [d["code"] for d in data["diagnoses"]]
    assert "proxy_idle_timeout" not in codes, out
    found = [d for d in data["diagnoses"] if d["code"] == "backend_gone"]
    assert len(found) == 1, out + json.dumps(data["results"])
    gone = found[0]
    assert "sustained" in gone["checks"], out
    assert "connection refused" in gone["cause"]
    assert "server process died or restarted" in gone["cause"]
    sustained = next(r for r in data["results"] if r["name"] == "sustained")
    assert sustained["evidence"]["close_code"] == 1006
    assert sustained["evidence"]["backend_gone"] is True


def test_watch_reports_a_stalled_connection_and_closes_it(start_service: StartService) -> None:
    """A frozen server (SIGSTOP: the socket stays open, nothing arrives) is reported as a
    stall after ping_interval + grace, not waited on forever, and not counted as a drop."""
    service = start_service()  # heartbeat every 0.4 s
    watch = start_smoke("watch", service.ws, "--grace", "0.5", "--timeout", "1",
                        "--duration", "60")
    try:
        service.wait_for_line(HEALTH_CONNECT, timeout=30)
        watch.wait_for_line(r"connected ws://", 30)
        os.kill(service.proc.pid, signal.SIGSTOP)
        try:
            stall = watch.wait_for_line(r"error #1: ", 30)
        finally:
            os.kill(service.proc.pid, signal.SIGCONT)
        watch.proc.send_signal(signal.SIGTERM)
        code = watch.finish(30)
    finally:
        watch.stop(signal.SIGKILL)
    stdout = watch.output()
    assert "stalled: no message for 0.9s (ping_interval 0.4 + grace 0.5s)" in stall, stdout
    assert "closing it" in stall
    assert "drop #" not in stdout  # the socket was open: not an invented 1006
    summary = stdout.strip().splitlines()[-1]
    assert "errors by kind: stalled x1" in summary, stdout
    assert "0 drop(s)" in summary
    assert code == 1, stdout


def test_control_character_in_header_is_a_usage_error(tmp_path: Path) -> None:
    run = run_smoke(tmp_path, "ws://127.0.0.1:1", "--quick", "-H", "X-A: a\x01b")
    assert run.code == 2, run.out + run.err
    assert "control character" in run.err
    assert run.report == {}  # rejected before any request


# -- in-process: the suite's own failures, against the real service -------------------------

FAST = Options(timeout=5.0, sustain=1.0, grace=1.0, latency_samples=3,
               latency_limit_ms=float(BEHAVIOUR_LATENCY_LIMIT_MS))


def _statuses(report: Report) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in report.results:
        out.setdefault(r.name, []).append(r.status)
    return out


def test_tool_error_is_exit_2_and_missing_checks_are_skipped(
        fast_service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(run: Run) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(smoke.checks.health, "_health_session", broken)
    report = asyncio.run(run_checks(parse_target(fast_service.url), FAST))
    statuses = _statuses(report)
    assert report.exit_code == 2
    assert statuses["tool_error"] == ["fail"]
    assert statuses["handshake"] == ["pass"]  # not a second, invented handshake failure
    for name in ("health_status", "config", "heartbeat", "sustained", "origin_policy"):
        assert statuses[name] == ["skip"], (name, statuses)
    heartbeat = next(r for r in report.results if r.name == "heartbeat")
    assert "RuntimeError('boom')" in heartbeat.detail
    assert [d.code for d in report.diagnoses] == ["tool_error"]


def test_close_racing_the_heartbeat_pong_fails_the_checks_not_the_tool(
        fast_service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    answer = Probe.answer

    async def racing(self: Probe, heartbeat: Heartbeat) -> None:
        if self.endpoint == "/ws/health":
            await self.ws.close(1000, "gone")  # the close wins the race: the pong finds it
        await answer(self, heartbeat)

    monkeypatch.setattr(Probe, "answer", racing)
    report = asyncio.run(run_checks(parse_target(fast_service.url), FAST))
    statuses = _statuses(report)
    assert "tool_error" not in statuses, report.results
    assert statuses["handshake"] == ["pass"]
    assert statuses["heartbeat"] == ["fail"]
    assert statuses["sustained"] == ["fail"]
    assert report.exit_code == 1


def test_a_stuck_session_hits_the_run_deadline(
        fast_service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    async def ws_session(run: Run) -> None:  # stuck: never returns
        await asyncio.Event().wait()

    monkeypatch.setattr(smoke.checks, "ws_session", ws_session)
    options = Options(timeout=0.5, grace=0.5, quick=True, latency_samples=2,
                      latency_limit_ms=float(BEHAVIOUR_LATENCY_LIMIT_MS))
    report = asyncio.run(run_checks(parse_target(fast_service.url), options))
    statuses = _statuses(report)
    assert report.exit_code == 2
    tool = next(r for r in report.results if r.name == "tool_error")
    assert "deadline" in tool.detail
    assert "still running: ws_session" in tool.detail
    assert statuses["ws_ping_pong"] == statuses["ws_echo"] == ["skip"]
    assert statuses["heartbeat"] == ["pass"]  # finished checks are kept


@pytest.mark.parametrize(("endpoint", "reply"), [("/ws/echo", Echo), ("/ws", WsEcho)])
def test_echo_of_our_heartbeat_pong_is_not_taken_for_a_reply(
        fast_service: Service, endpoint: str, reply: type[Echo | WsEcho]) -> None:
    """/ws/echo and /ws heartbeat an idle client and echo the pong it answers with: a reply
    read after answering must be the echo of what the check sent, not of the pong."""
    async def scenario() -> tuple[bytes, bytes]:
        probe = Probe(fast_service.url + endpoint, endpoint, Options(timeout=5.0))
        await probe.open()
        try:
            deadline = time.monotonic() + 5
            while not isinstance(message := await probe.recv(), Heartbeat):
                assert time.monotonic() < deadline, "no heartbeat on an idle connection"
            await probe.answer(message)
            sent = await probe.send({"type": "smoke_test", "data": "after-pong"})
            echo = await probe.recv_until(reply, time.monotonic() + 5)
            return sent, bytes(echo.original if isinstance(echo, Echo) else echo.data)
        finally:
            await probe.abort()

    sent, echoed = asyncio.run(scenario())
    assert json.loads(echoed) == json.loads(sent)
