"""``infra/tests/ws_fleet.py``: N reconnecting clients through a backend restart.

One backend, no nginx: between the old process's exit and the new one's listen nothing
answers on the port, so refused connects (and a 503 from the draining process, if a client
comes back before it stopped listening) are the restart window's expected failures. Every
close must be the service's 1001, every client must come back, and the longest gap stays
under 5 s.

The status file is polled (bounded, while watching the fleet process); nothing sleeps in
place of an event.
"""

from __future__ import annotations

import importlib.util
import json
import math
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import smoke.stats
from testkit.fleet import FLEET, FleetRun
from testkit.paths import REPO
from testkit.service import ServiceProcess, StartService

RESTART_WINDOW_FAILURES = {"ConnectionRefusedError", "503"}
REPORT_FIELDS = {
    "clients", "url", "elapsed_s", "stopped_by", "connects", "closes_total", "closes_by_code",
    "closes", "handshake_failures", "handshake_failures_total", "gaps", "max_gap_s",
    "still_connected_at_stop", "open_gaps_s", "first_connected_s", "heartbeats_answered",
}

def test_fleet_rides_a_backend_restart(start_service: StartService, tmp_path: Path) -> None:
    clients = 20
    service = start_service()  # heartbeat every 0.4 s
    fleet = FleetRun(tmp_path, f"{service.ws}/ws/health", clients, "--max-seconds", "120",
                     # A refused connect backs off at most 1 s: the gap stays near the
                     # restart window instead of a 5 s window drawn after it.
                     "--max-backoff", "1")
    try:
        fleet.wait_status(lambda s: s["connected"] == clients, 30)
        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(15) == 0  # the old process is gone: the port is free
        restarted: ServiceProcess = start_service(PORT=str(service.port))
        back = fleet.wait_status(
            lambda s: s["closes"] >= clients and s["connected"] == clients, 30)
        report = fleet.finish()
    finally:
        fleet.log.stop()
    print(f"FLEET {json.dumps({k: report[k] for k in sorted(REPORT_FIELDS - {'closes'})})}")
    assert set(report) >= REPORT_FIELDS, sorted(report)
    assert back["clients"] == clients
    assert report["stopped_by"] == "stop_file"
    assert report["closes_by_code"] == {"1001": clients}, report["closes_by_code"]
    assert report["closes_total"] == clients
    assert {(c["code"], c["reason"]) for c in report["closes"]} == {
        (1001, "server shutting down")}
    assert len({c["client"] for c in report["closes"]}) == clients  # each client once
    failures = report["handshake_failures"]
    assert set(failures) <= RESTART_WINDOW_FAILURES, failures
    assert report["handshake_failures_total"] == sum(failures.values())
    # Everyone came back, each within 5 s of its close.
    assert report["still_connected_at_stop"] == clients
    assert report["open_gaps_s"] == []
    assert report["gaps"]["count"] == clients
    assert report["max_gap_s"] == report["gaps"]["max_s"]
    assert report["max_gap_s"] < 5.0
    assert report["gaps"]["p50_s"] <= report["gaps"]["p99_s"] <= report["max_gap_s"]
    assert report["connects"] == 2 * clients
    assert report["first_connected_s"] is not None
    shut = service.wait_for_line(r"closed \d+ connection\(s\) with 1001", 5)
    assert f"closed {clients} connection(s) with 1001, 0 did not finish" in shut
    assert restarted.proc.poll() is None
    final = fleet.status()
    assert final is not None
    assert final["connected"] == 0  # the status file's last word: all closed at the stop


def test_fleet_stops_after_max_seconds_and_does_not_count_its_own_closes(
    start_service: StartService, tmp_path: Path,
) -> None:
    service = start_service()
    fleet = FleetRun(tmp_path, f"{service.ws}/ws/echo", 3, "--max-seconds", "1.5")
    try:
        code = fleet.log.finish(30)  # --max-seconds ends it
    finally:
        fleet.log.stop()
    assert code == 0, fleet.log.text()
    report: dict[str, Any] = json.loads(fleet.report_file.read_text())
    assert report["stopped_by"] == "max_seconds"
    assert (report["closes_total"], report["closes_by_code"]) == (0, {})
    assert report["still_connected_at_stop"] == 3
    assert report["handshake_failures"] == {}
    assert report["gaps"] == {"count": 0, "max_s": None, "p50_s": None, "p99_s": None}
    assert report["heartbeats_answered"] >= 3  # /ws/echo heartbeats after 0.4 s of quiet


@pytest.mark.parametrize("url", [
    "ws://10.0.0.1:8080/ws/health",
    "ws://192.168.1.10/ws/health",
    "wss://example.com/ws/health",
    "ws://[2001:db8::1]:9000/ws/health",
    "http://127.0.0.1:9000/ws/health",
])
def test_fleet_refuses_a_url_that_is_not_loopback(url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(FLEET), url, "--clients", "1", "--status-file",
         str(tmp_path / "s.json"), "--report", str(tmp_path / "r.json"), "--stop-file",
         str(tmp_path / "stop"), "--max-seconds", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refusing URL" in done.stderr
    assert not (tmp_path / "s.json").exists()  # refused before anything started
    assert not (tmp_path / "r.json").exists()


def _fleet_module() -> ModuleType:
    """The script as a module (it is not in a package); registered, as dataclasses need."""
    name = "infra_tests_ws_fleet"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FLEET)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("url", "ok"), [
    ("ws://127.0.0.1:9000/ws/health", True),
    ("ws://127.8.9.10:9000/ws/echo", True),
    ("ws://localhost:9000/ws/health", True),
    ("ws://[::1]:9000/ws/health", True),
    ("ws://[::ffff:127.0.0.1]:9000/ws/health", True),
    ("ws://128.0.0.1:9000/ws/health", False),
    ("ws://localhost.example.com/ws/health", False),
    ("ws://0.0.0.0:9000/ws/health", False),
])
def test_loopback_rule(url: str, ok: bool) -> None:
    fleet = _fleet_module()
    if ok:
        assert fleet.loopback_url(url) == url
    else:
        with pytest.raises(fleet.UsageError, match="not loopback"):
            fleet.loopback_url(url)


def test_the_fleets_percentile_is_the_one_nearest_rank() -> None:
    percentile = _fleet_module().percentile
    assert percentile is smoke.stats.percentile
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50.0, 99.0, 100.0)
    assert math.isnan(percentile([], 50))
