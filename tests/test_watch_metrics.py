"""Prometheus metrics of ws-smoke against real ws-service processes.

``ws-smoke watch --metrics-port 0`` is scraped across a service restart (SIGTERM: every client
gets 1001, then the process exits; a new one starts on the same port) and the deltas must be
exact: one more 1001 drop, up 1 -> 0 -> 1, one reconnect observed, heartbeat gaps growing.
``ws-smoke --prometheus FILE`` must leave a file node_exporter can read, replaced by rename.

Every wait is on an event - a line the watcher prints, a process exit, a metric reaching a
value - never a sleep. Metrics are parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from smoke.exporter import report_registry
from smoke.model import CheckResult, Report, TlsFacts
from testkit.ports import free_port
from testkit.processes import LineLog
from testkit.smoke_cli import latency_args

WS_SMOKE = str(Path(sys.executable).parent / "ws-smoke")
REPO = Path(__file__).resolve().parent.parent

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample as {(name, labels): value}; the parser rejects a malformed exposition."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}; have {sorted(k for k, _ in samples)}"
    return samples[key]


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return parse(response.read().decode())


def scrape_until(url: str, done: Callable[[Samples], bool], timeout: float = 15.0) -> Samples:
    """Scrape until ``done`` holds: the metric reaching a value is the event waited for."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if done(samples):
            return samples
        assert time.monotonic() < deadline, f"metrics never reached the state:\n{samples}"
        time.sleep(0.05)  # the poll period, not a wait for the event itself


# -- watch ------------------------------------------------------------------------------------


def assert_first_connection(samples: Samples, url: str) -> float:
    """Connected once, no drop yet, heartbeats flowing; the heartbeat gaps observed."""
    assert value(samples, "ws_smoke_up") == 1
    assert value(samples, "ws_smoke_connections_total") == 1
    assert value(samples, "ws_smoke_drops_total", code="1001") == 0  # exported from the start
    assert value(samples, "ws_smoke_reconnect_seconds_count") == 0
    assert value(samples, "ws_smoke_server_ping_interval_seconds") == 0.4
    assert series(samples, "ws_smoke_last_diagnosis_info") == {}
    assert value(samples, "ws_smoke_watch_info", url=url, version="0.1.0") == 1
    assert value(samples, "process_start_time_seconds") > 0  # the watcher's own
    gaps = value(samples, "ws_smoke_heartbeat_gap_seconds_count")
    assert gaps >= 2
    # 0.4 s apart: every gap is far below 5 s (and above 0: they are intervals)
    assert value(samples, "ws_smoke_heartbeat_gap_seconds_bucket", le="5.0") == gaps
    assert 0 < value(samples, "ws_smoke_heartbeat_gap_seconds_sum") < 5 * gaps
    return gaps


def test_watch_metrics_across_a_restart(start_service: Callable[..., Any]) -> None:
    service = start_service()  # heartbeat every 0.4 s
    watch = LineLog([WS_SMOKE, "watch", service.ws, "--duration", "60", "--timeout", "3",
                     "--max-backoff", "1", "--metrics-port", "0"], cwd=REPO)
    try:
        at, found = watch.wait_for_match(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", 15)
        url = found[1]
        at, _ = watch.wait_for_match(r"connected ws://", 15, at + 1)
        before = scrape_until(url, lambda s: value(s, "ws_smoke_heartbeats_total") >= 2)
        gaps_before = assert_first_connection(before, f"{service.ws}/ws/health")

        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(15) == 0  # gone: the port is free, attempts are refused
        at, _ = watch.wait_for_match(r"drop #1: code 1001", 10, at + 1)
        down = scrape(url)  # the drop is counted before it is logged
        assert value(down, "ws_smoke_up") == 0
        assert value(down, "ws_smoke_drops_total", code="1001") == 1
        assert value(down, "ws_smoke_drops_total", code="1006") == 0
        assert value(down, "ws_smoke_reconnect_seconds_count") == 0  # not back yet
        # Attempts against the dead port: the last diagnosis becomes "connection refused",
        # the only series of the info metric.
        down = scrape_until(url, lambda s: series(s, "ws_smoke_last_diagnosis_info") == {
            frozenset({("code", "connection_refused")}): 1.0})
        assert value(down, "ws_smoke_up") == 0
        assert value(down, "ws_smoke_connect_failures_total", kind="refused", status="") >= 1
        assert value(down, "ws_smoke_last_diagnosis_timestamp_seconds") > time.time() - 60

        start_service(PORT=str(service.port))
        at, back = watch.wait_for_match(r"back after (\d+\.\d+)s", 20, at + 1)
        after = scrape(url)
        assert value(after, "ws_smoke_up") == 1
        assert value(after, "ws_smoke_connections_total") == 2
        assert value(after, "ws_smoke_drops_total", code="1001") == 1  # exactly one drop
        assert sum(series(after, "ws_smoke_drops_total").values()) == 1
        assert series(after, "ws_smoke_errors_total") == {}
        assert value(after, "ws_smoke_reconnect_seconds_count") == 1
        gap = value(after, "ws_smoke_reconnect_seconds_sum")
        assert abs(gap - float(back[1])) < 0.006, (gap, back[0])  # the gap the log shows
        assert value(after, "ws_smoke_reconnect_seconds_bucket", le="5.0") == 1
        # The diagnosis stays the last one made: being back does not erase it.
        assert series(after, "ws_smoke_last_diagnosis_info") == {
            frozenset({("code", "connection_refused")}): 1.0}

        gaps_after = value(after, "ws_smoke_heartbeat_gap_seconds_count")
        later = scrape_until(url, lambda s: value(
            s, "ws_smoke_heartbeat_gap_seconds_count") >= gaps_after + 2)
        assert value(later, "ws_smoke_heartbeat_gap_seconds_count") > gaps_before
        assert value(later, "ws_smoke_heartbeats_total") >= gaps_after + 2
        assert value(later, "ws_smoke_up") == 1
        code = watch.stop(timeout=15)
    finally:
        watch.stop(timeout=15)
    assert code == 0, watch.output()  # a 1001 move back within --max-gap


def test_watch_metrics_port_taken(start_service: Callable[..., Any]) -> None:
    """A port that cannot be bound stops the watch at once (exit 2), before any connection."""
    service = start_service()
    first = LineLog([WS_SMOKE, "watch", service.ws, "--duration", "30", "--metrics-port", "0"],
                    cwd=REPO)
    try:
        _, found = first.wait_for_match(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", 15)
        second = LineLog([WS_SMOKE, "watch", service.ws, "--metrics-port", found[1]], cwd=REPO)
        assert second.proc.wait(15) == 2
        second.stop(timeout=15)
        assert f"cannot serve metrics on 127.0.0.1 port {found[1]}" in second.output()
        assert "connected" not in second.output()
    finally:
        first.stop(timeout=15)


# -- the textfile of a check run --------------------------------------------------------------


def run_smoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WS_SMOKE, *args, *latency_args(args)], cwd=REPO,
                          capture_output=True, text=True, timeout=90, check=False)


def assert_every_check(samples: Samples, report: dict[str, Any]) -> None:
    """Every check has exactly one sample: passed (1 or 0) or skipped, and its duration."""
    target = report["target"]
    for r in report["results"]:
        labels = {"target": target, "check": r["name"], "via": r.get("via", "target")}
        key = frozenset(labels.items())
        if r["status"] == "skip":
            assert value(samples, "ws_smoke_check_skipped", **labels) == 1
            assert key not in series(samples, "ws_smoke_check_passed")
        else:
            assert value(samples, "ws_smoke_check_passed", **labels) == (r["status"] == "pass")
            assert key not in series(samples, "ws_smoke_check_skipped")
        assert value(samples, "ws_smoke_check_duration_seconds", **labels) == r["duration_s"]
    assert len(series(samples, "ws_smoke_check_passed")) + len(
        series(samples, "ws_smoke_check_skipped")) == len(report["results"])
    assert value(samples, "ws_smoke_run_duration_seconds", target=target) == report["duration_s"]


def test_prometheus_textfile(start_service: Callable[..., Any], tmp_path: Path) -> None:
    service = start_service()
    prom = tmp_path / "textfile" / "ws_smoke.prom"
    prom.parent.mkdir()
    report_path = tmp_path / "report.json"
    started = time.time()
    run = run_smoke(service.ws, "--quick", "--prometheus", str(prom), "--json",
                    str(report_path))
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(report_path.read_text())
    samples = parse(prom.read_text())
    target = report["target"]
    assert target == service.ws
    assert {r["status"] for r in report["results"]} == {"pass"}
    assert_every_check(samples, report)
    assert value(samples, "ws_smoke_exit_code", target=target) == 0
    assert value(samples, "ws_smoke_run_duration_seconds", target=target) == report["duration_s"]
    ended = value(samples, "ws_smoke_last_run_timestamp_seconds", target=target)
    assert started <= ended <= time.time()
    assert series(samples, "ws_smoke_diagnosis_info") == {}
    [latency] = [r for r in report["results"] if r["name"] == "latency"]
    assert value(samples, "ws_smoke_round_trip_seconds", target=target, via="target",
                 quantile="0.95") == latency["metrics"]["p95_ms"] / 1000
    assert sorted(p.name for p in prom.parent.iterdir()) == ["ws_smoke.prom"]  # no temp file
    assert prom.read_text().startswith("# HELP ")
    inode = prom.stat().st_ino

    # A failing run over the same file: a foreign Origin is refused (HTTP 403).
    run = run_smoke(service.ws, "--quick", "--origin", "https://evil.invalid",
                    "--prometheus", str(prom), "--json", str(report_path))
    assert run.returncode == 1, run.stdout + run.stderr
    samples = parse(prom.read_text())
    report = json.loads(report_path.read_text())
    assert {r["status"] for r in report["results"]} == {"pass", "fail", "skip"}
    assert_every_check(samples, report)
    assert value(samples, "ws_smoke_exit_code", target=target) == 1
    assert value(samples, "ws_smoke_check_passed", target=target, check="handshake",
                 via="target") == 0
    assert value(samples, "ws_smoke_check_passed", target=target, check="http_health",
                 via="target") == 1  # a plain GET sends no Origin check
    assert series(samples, "ws_smoke_diagnosis_info") == {
        frozenset({("target", target), ("code", "origin_forbidden")}): 1.0}
    # Replaced by a rename (a new inode), never rewritten in place; nothing left beside it.
    assert prom.stat().st_ino != inode
    assert sorted(p.name for p in prom.parent.iterdir()) == ["ws_smoke.prom"]


def test_prometheus_textfile_unreachable(tmp_path: Path) -> None:
    port = free_port()  # nothing listens on it
    prom = tmp_path / "ws_smoke.prom"
    target = f"ws://127.0.0.1:{port}"
    run = run_smoke(target, "--quick", "--timeout", "2", "--prometheus", str(prom))
    assert run.returncode == 2, run.stdout + run.stderr
    samples = parse(prom.read_text())
    assert value(samples, "ws_smoke_exit_code", target=target) == 2
    assert value(samples, "ws_smoke_check_passed", target=target, check="handshake",
                 via="target") == 0
    assert frozenset({("target", target), ("code", "connection_refused")}) in series(
        samples, "ws_smoke_diagnosis_info")
    assert os.listdir(tmp_path) == ["ws_smoke.prom"]

    # A file that cannot be written is an error of its own, said on stderr (exit 2).
    run = run_smoke(target, "--quick", "--timeout", "2", "--prometheus",
                    str(tmp_path / "missing" / "x.prom"))
    assert run.returncode == 2
    assert "cannot write" in run.stderr
    assert os.listdir(tmp_path) == ["ws_smoke.prom"]


def test_textfile_certificate_expiry() -> None:
    """A wss:// run's certificate facts become its expiry as a timestamp, to alert on days
    left (``... - time() < 14 * 86400``); a ws:// run has no such series."""
    not_after = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    report = Report(tool="ws-smoke", target="wss://ws-kit.test:9443", direct=None,
                    started_at=1_800_000_000.0, duration_s=1.5, exit_code=0,
                    counts={"pass": 1, "fail": 0, "skip": 0},
                    results=[CheckResult(name="tls", title="TLS", status="pass",
                                         duration_s=0.1, detail="ok")],
                    diagnoses=[], tls=TlsFacts(not_after=not_after.isoformat(), days_left=90,
                                                               verified=True))
    samples = parse(generate_latest(report_registry(report)).decode())
    assert value(samples, "ws_smoke_tls_cert_expiry_timestamp_seconds",
                 target="wss://ws-kit.test:9443") == not_after.timestamp()
    assert value(samples, "ws_smoke_last_run_timestamp_seconds",
                 target="wss://ws-kit.test:9443") == 1_800_000_001.5
    report.tls = None
    samples = parse(generate_latest(report_registry(report)).decode())
    assert series(samples, "ws_smoke_tls_cert_expiry_timestamp_seconds") == {}
