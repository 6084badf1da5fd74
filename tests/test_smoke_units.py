"""ws-smoke's pure parts: URL handling, percentiles and diagnosis rules on given evidence.

The integration tests (test_smoke.py) produce most evidence for real; these cover the rules
a test cannot provoke cheaply on 127.0.0.1 (a 1006 right after open, a drop while
heartbeats flow, 401, 426).
"""

from __future__ import annotations

import asyncio
import ssl

import msgspec
import pytest

from smoke.diagnose import diagnose
from smoke.model import CheckName, CheckResult, Evidence, Report
from smoke.probe import Probe
from smoke.report import junit_xml
from smoke.stats import percentile
from smoke.target import Options, UsageError, parse_header, parse_target
from smoke.tls import classify
from smoke.watch import Tally, _settle

TARGET = parse_target("ws://127.0.0.1:9000")


@pytest.mark.parametrize(
    ("given", "ws_base", "http_base"),
    [
        ("ws://localhost:9000", "ws://localhost:9000", "http://localhost:9000"),
        ("https://api.example.invalid", "wss://api.example.invalid",
         "https://api.example.invalid"),
        ("http://127.0.0.1:8080/ws", "ws://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("wss://h.invalid/prefix/ws/health/", "wss://h.invalid/prefix",
         "https://h.invalid/prefix"),
        ("127.0.0.1:9000", "ws://127.0.0.1:9000", "http://127.0.0.1:9000"),
    ],
)
def test_parse_target(given: str, ws_base: str, http_base: str) -> None:
    target = parse_target(given)
    assert (target.ws_base, target.http_base) == (ws_base, http_base)
    assert target.ws("/ws/echo") == ws_base + "/ws/echo"


@pytest.mark.parametrize("bad", ["ftp://h", "ws://", "ws://h:99999"])
def test_parse_target_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_target(bad)


def test_parse_header() -> None:
    assert parse_header("Authorization:  Bearer x ") == ("Authorization", "Bearer x")
    with pytest.raises(UsageError):
        parse_header("no colon")


def test_percentile_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 50) == 50
    assert percentile(samples, 95) == 95
    assert percentile(samples, 99) == 99
    assert percentile([3.0], 99) == 3.0


def _failed(name: CheckName, ev: Evidence, **metrics: float) -> CheckResult:
    return CheckResult(name=name, title=name, status="fail", duration_s=0.1, detail="x",
                       evidence=ev, metrics=metrics)


def _closed(age: float, idle: float, heartbeats: int = 0) -> Evidence:
    return Evidence(url="ws://127.0.0.1:9000/ws/health", http_status=101, opened=True,
                    close_code=1006, close_reason="", closed_by="network",
                    age_at_close_s=age, idle_at_close_s=idle, heartbeats_received=heartbeats)


def test_1006_right_after_open_blames_proxy_upgrade_handling() -> None:
    [d] = diagnose(TARGET, Options(), [_failed("sustained", _closed(0.05, 0.05))],
                   ping_interval=30)
    assert d.code == "abnormal_close_immediate"
    assert "0.05s after the handshake" in d.cause
    assert "proxy_set_header Upgrade" in d.next_step


def test_1006_at_n_seconds_compares_with_ping_interval() -> None:
    [d] = diagnose(TARGET, Options(), [_failed("sustained", _closed(60.2, 60.2))],
                   ping_interval=75)
    assert d.code == "proxy_idle_timeout"
    assert "proxy idle timeout of about 60 s; server ping interval is 75 s" in d.cause
    assert "Lower WS_PING_INTERVAL below 60 s (e.g. 30)" in d.next_step
    assert "raise proxy_read_timeout above 75 s" in d.next_step


def test_1006_while_heartbeats_flow_is_not_an_idle_timeout() -> None:
    [d] = diagnose(TARGET, Options(), [_failed("sustained", _closed(30.0, 2.0, 5))],
                   ping_interval=5)
    assert d.code == "dropped_while_active"
    assert "lifetime cap" in d.cause


def test_401_asks_for_bearer_token() -> None:
    ev = Evidence(url="ws://x/ws", http_status=401, error="http_status")
    [d] = diagnose(TARGET, Options(), [_failed("handshake", ev)])
    assert d.code == "auth_required"
    assert "-H 'Authorization: Bearer TOKEN'" in d.next_step
    [d] = diagnose(TARGET, Options(headers=(("Authorization", "Bearer bad"),)),
                   [_failed("handshake", ev)])
    assert "was rejected" in d.cause


@pytest.mark.parametrize("status", [400, 426])
def test_400_426_mean_upgrade_not_forwarded(status: int) -> None:
    ev = Evidence(url="ws://x/ws", http_status=status, error="http_status",
                  server_header="nginx/1.22.1")
    [d] = diagnose(TARGET, Options(), [_failed("handshake", ev)])
    assert d.code == "upgrade_not_forwarded"
    assert "Upgrade and Connection headers" in d.cause


def test_same_cause_merges_checks() -> None:
    ev = Evidence(url="ws://x/ws", http_status=504, error="http_status")
    diagnoses = diagnose(TARGET, Options(), [_failed("handshake", ev), _failed("ws_echo", ev)])
    assert [(d.code, d.checks) for d in diagnoses] == [
        ("backend_unreachable", ["handshake", "ws_echo"])]


def test_heartbeat_overdue_drop_is_an_idle_timeout() -> None:
    [d] = diagnose(TARGET, Options(), [_failed("sustained", _closed(65.0, 60.0, 1))],
                   ping_interval=61)
    assert d.code == "proxy_idle_timeout"
    assert "about 60 s" in d.cause


# -- rules on recorded evidence (review fixes) -----------------------------------------------

def test_1006_with_messages_just_received_is_not_an_idle_timeout() -> None:
    """A drop in the middle of the latency loop (last message 0.0 s before) once read as
    "proxy idle timeout of about 0.0 s"."""
    [d] = diagnose(TARGET, Options(), [_failed("latency", _closed(2.0, 0.0))], ping_interval=30)
    assert d.code == "dropped_while_active"
    assert "messages were arriving" in d.cause


def test_1006_then_refused_recheck_is_a_dead_backend() -> None:
    ev = _closed(4.0, 3.6)
    ev.after_drop = "GET http://127.0.0.1:9000/health after the drop: connection refused"
    ev.backend_gone = True
    diagnoses = diagnose(TARGET, Options(), [_failed("sustained", ev), _failed("heartbeat", ev)],
                         ping_interval=30)
    assert [(d.code, d.checks) for d in diagnoses] == [
        ("backend_gone", ["sustained", "heartbeat"])]
    assert "server process died or restarted" in diagnoses[0].cause
    assert "WS_PING_INTERVAL" not in diagnoses[0].next_step


def test_bad_health_response_is_not_a_handshake_problem() -> None:
    ev = Evidence(url="http://127.0.0.1:9000/health", http_status=400, error="http_status",
                  error_detail="HTTP 400 Bad Request", server_header="granian")
    [d] = diagnose(TARGET, Options(), [_failed("http_health", ev)])
    assert d.code == "health_http_status"
    assert "handshake" not in d.cause
    assert "Upgrade" not in d.cause + d.next_step
    ev = Evidence(url="http://127.0.0.1:9000/health", http_status=502, error="http_status")
    [d] = diagnose(TARGET, Options(), [_failed("http_health", ev)])
    assert d.code == "health_backend_unreachable"


@pytest.mark.parametrize("value", ["a\x01b", "a\nX-Injected: 1", "a\x00", "a\x7f"])
def test_header_with_control_characters_is_a_usage_error(value: str) -> None:
    with pytest.raises(UsageError, match="control character"):
        parse_header(f"X-A: {value}")
    assert parse_header("X-A: a\tb") == ("X-A", "a\tb")
    with pytest.raises(UsageError):
        parse_header("X A: b")


def test_junit_attaches_causes_by_label_and_direct_lists_labels() -> None:
    target_ev = Evidence(url="ws://x/ws/echo", http_status=400, error="http_status")
    direct_ev = Evidence(url="ws://y/ws/echo", error="refused")
    results = [
        _failed("handshake", target_ev),
        msgspec.structs.replace(_failed("handshake", direct_ev), via="direct"),
    ]
    direct = parse_target("ws://127.0.0.1:9001")
    diagnoses = diagnose(TARGET, Options(), results, direct=direct)
    by_code = {d.code: d for d in diagnoses}
    assert by_code["upgrade_not_forwarded"].checks == ["handshake"]
    assert by_code["connection_refused"].checks == ["direct:handshake"]
    assert by_code["backend_problem"].checks == ["handshake", "direct:handshake"]
    report = Report(tool="ws-smoke", target=TARGET.ws_base, direct=direct.ws_base,
                    started_at=0.0, duration_s=0.1, exit_code=1,
                    counts={"pass": 0, "fail": 2, "skip": 0}, results=results,
                    diagnoses=diagnoses)
    root = junit_xml(report).getroot()
    texts = {case.get("classname"): (case.findtext("failure") or "")
             for case in root.iter("testcase")}
    assert "[upgrade_not_forwarded]" in texts["ws_smoke.target"]
    assert "[connection_refused]" not in texts["ws_smoke.target"]
    assert "[connection_refused]" in texts["ws_smoke.direct"]
    assert "[upgrade_not_forwarded]" not in texts["ws_smoke.direct"]


def test_tool_error_is_a_junit_error_not_a_target_failure() -> None:
    tool = CheckResult(name="tool_error", title="t", status="fail", duration_s=1.0,
                       detail="internal error in health_session: RuntimeError('boom')")
    [d] = diagnose(TARGET, Options(), [tool])
    assert d.code == "tool_error"
    report = Report(tool="ws-smoke", target=TARGET.ws_base, direct=None, started_at=0.0,
                    duration_s=1.0, exit_code=2, counts={"pass": 0, "fail": 1, "skip": 0},
                    results=[tool], diagnoses=[d])
    root = junit_xml(report).getroot()
    assert root.get("errors") == "1"
    assert root.get("failures") == "0"
    assert root.find(".//testcase/error") is not None


def test_watch_error_on_open_socket_is_not_logged_as_a_drop(
        capsys: pytest.CaptureFixture[str]) -> None:
    probe = Probe("ws://127.0.0.1:9/ws/health", "/ws/health", Options())
    probe.evidence.opened = True
    probe.evidence.error = "unexpected_message"
    probe.evidence.error_detail = "message outside the /ws/health contract"
    tally = Tally()
    asyncio.run(_settle(probe, tally, ended=True))
    out = capsys.readouterr().out
    assert "error #1: unexpected_message: message outside" in out
    assert "drop" not in out
    assert probe.evidence.close_code is None  # no invented 1006
    assert (len(tally.drops), len(tally.errors)) == (0, 1)
    assert "errors by kind: unexpected_message x1" in tally.summary(1.0)


def test_an_unresolvable_name_is_one_dns_diagnosis_for_every_check_that_met_it() -> None:
    detail = "cannot resolve host (Name or service not known)"
    results = [_failed(name, Evidence(url="wss://x.invalid", error="dns", error_detail=detail))
               for name in ("tls", "http_health", "handshake", "health_status")]
    diagnoses = diagnose(TARGET, Options(), results)
    assert [(d.code, d.checks) for d in diagnoses] == [
        ("dns", ["tls", "http_health", "handshake", "health_status"])]


def test_a_tls_server_hanging_up_is_not_called_a_plain_port() -> None:
    eof = ssl.SSLEOFError(8, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred")
    plain = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    assert classify(eof) == "other"
    assert classify(plain) == "not_tls"
