"""``ws-smoke watch`` and the client rule of a rolling deploy, against real ws-service processes.

A SIGTERM'd service closes every WebSocket with 1001 Going Away: the watcher treats that as a
move (reconnect within ``uniform(0, --jitter)``), measures the gap until the next greeting and
exits 0 when it was back within ``--max-gap``. Any other drop (kill -9: 1006) exits 1.

Every wait is on an event - a line the watcher prints, a process exit - never a sleep.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from smoke.model import Evidence
from smoke.watch import INITIAL_BACKOFF, Backoff, Tally
from testkit.paths import REPO, VENV_BIN
from testkit.processes import LineLog
from testkit.service import ServiceProcess, StartService


def start_watch(service: ServiceProcess, report: Path, *extra: str) -> LineLog:
    """``ws-smoke watch`` as a subprocess; ``--duration`` only bounds a run that goes wrong."""
    return LineLog([str(VENV_BIN / "ws-smoke"), "watch", service.ws, "--duration", "60",
                    "--timeout", "3", "--max-backoff", "1", "--json", str(report), *extra],
                   cwd=REPO)


def watched(start_service: StartService, tmp_path: Path) -> tuple[ServiceProcess, LineLog, Path]:
    """A service (heartbeat every 0.4 s), ``ws-smoke watch`` on it, and its report's path."""
    report = tmp_path / "watch.json"
    service = start_service()
    return service, start_watch(service, report), report


def stop_watch(watch: LineLog) -> int:
    watch.proc.send_signal(signal.SIGTERM)
    return watch.finish(15)


def connected_then_signalled(watch: LineLog, service: ServiceProcess, sig: int) -> int:
    """Wait for the watcher's first connection, then end the service with ``sig``; the
    index of the connected line (later lines are the drop's)."""
    first, _, _ = watch.wait_for(r"connected ws://", 15)
    service.proc.send_signal(sig)
    assert service.proc.wait(15) == (0 if sig == signal.SIGTERM else -sig)
    return first


def load(report: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def test_sigterm_and_restart_is_a_move_and_exits_0(
    start_service: StartService, tmp_path: Path,
) -> None:
    service, watch, report = watched(start_service, tmp_path)
    started = time.monotonic()
    try:
        # The old process is gone: the port is free.
        first = connected_then_signalled(watch, service, signal.SIGTERM)
        service.wait_for_line(r"closed \d+ connection\(s\) with 1001", 5)
        drop, _, drop_line = watch.wait_for(r"drop #1: code", 10, first + 1)
        restarted = start_service(PORT=str(service.port))
        _, _, back_line = watch.wait_for(r"back after \d+\.\d+s", 20, drop)
        code = stop_watch(watch)
    finally:
        watch.stop()
    out = watch.text()
    assert "code 1001 (going away)" in drop_line, out
    assert "moved (1001): reconnecting in 1s at most" in out
    summary = out.strip().splitlines()[-1]
    assert "2 connection(s), 1 drop(s)" in summary, out
    assert "moved (1001): 1, other drops: 0" in summary
    assert "exit 0: every drop was a 1001 move" in summary
    assert code == 0, out

    data = load(report)
    assert data["exit_code"] == 0
    assert data["url"] == f"{service.ws}/ws/health"
    assert data["connections"] == 2
    assert data["moved"] == 1
    assert data["errors"] == []
    [dropped] = data["drops"]
    assert dropped["code"] == 1001
    assert dropped["reason"] == "server shutting down"
    assert dropped["diagnosis"] == "server_closed"
    assert dropped["age_s"] > 0
    assert dropped["gap_s"] is not None
    assert dropped["gap_s"] < data["max_gap_limit_s"] == 5.0
    assert data["max_gap_s"] == dropped["gap_s"]
    assert data["gaps"]["count"] == 1
    assert f"back after {dropped['gap_s']:.2f}s" in back_line
    failed = data["failed_attempts"]
    # Between the old process's exit and the new one's listen nothing answers: refused.
    assert set(failed["by_kind"]) <= {"refused", "http_status"}, failed
    assert set(failed["http_statuses"]) <= {"503"}, failed  # draining, before the exit
    assert 0 < data["elapsed_s"] <= time.monotonic() - started
    assert restarted.proc.poll() is None
    print(f"WATCH gap {dropped['gap_s']}s, failed attempts {failed}, "
          f"elapsed {data['elapsed_s']}s")


def test_kill9_is_a_1006_drop_and_exits_1(start_service: StartService, tmp_path: Path) -> None:
    service, watch, report = watched(start_service, tmp_path)
    try:
        first = connected_then_signalled(watch, service, signal.SIGKILL)
        drop, _, drop_line = watch.wait_for(r"drop #1: code", 10, first + 1)
        start_service(PORT=str(service.port))
        watch.wait_for(r"back after", 20, drop)  # back, quickly: the code alone fails the run
        code = stop_watch(watch)
    finally:
        watch.stop()
    out = watch.text()
    assert "code 1006" in drop_line, out
    # Asked after the 1006, GET /health was refused: the process died, not a proxy's cut.
    assert "after the drop: connection refused [backend_gone]" in drop_line, out
    assert "moved (1001)" not in drop_line
    assert code == 1, out
    assert "exit 1: 1 drop(s) other than 1001" in out.strip().splitlines()[-1]
    data = load(report)
    assert data["exit_code"] == 1
    assert [(d["code"], d["diagnosis"]) for d in data["drops"]] == [(1006, "backend_gone")]
    assert data["moved"] == 0
    assert data["other_drops"] == 1
    assert data["drops"][0]["gap_s"] is not None


def test_1001_without_a_comeback_exits_1(start_service: StartService, tmp_path: Path) -> None:
    """A move the watcher never came back from (the service stays down) is no success."""
    service, watch, report = watched(start_service, tmp_path)
    try:
        first = connected_then_signalled(watch, service, signal.SIGTERM)
        watch.wait_for(r"connect failed: ", 10, first + 1)  # nothing listens any more
        code = stop_watch(watch)
    finally:
        watch.stop()
    assert code == 1, watch.text()
    data = load(report)
    assert [d["code"] for d in data["drops"]] == [1001]
    assert data["drops"][0]["gap_s"] is None
    assert "not back from the last drop" in data["verdict"]
    assert data["failed_attempts"]["count"] >= 1
    assert data["failed_attempts"]["by_kind"].get("refused", 0) >= 1
    assert data["max_gap_s"] is None


def test_healthy_run_writes_a_clean_report(start_service: StartService, tmp_path: Path) -> None:
    report = tmp_path / "watch.json"
    service = start_service()
    watch = LineLog([str(VENV_BIN / "ws-smoke"), "watch", service.ws, "--duration", "1",
                     "--json", str(report)], cwd=REPO)
    try:
        code = watch.finish(20)  # --duration ends it
    finally:
        watch.stop()
    assert code == 0, watch.text()
    data = load(report)
    assert (data["connections"], data["drops"], data["errors"]) == (1, [], [])
    assert data["gaps"] == {"count": 0, "max_s": None, "p50_s": None}
    assert data["failed_attempts"] == {"count": 0, "by_kind": {}, "http_statuses": {}}
    assert data["heartbeats"] >= 1
    assert data["verdict"] == "no drop, no error"


# -- the rules, in-process ---------------------------------------------------------------------


def test_backoff_windows() -> None:
    b = Backoff(max_backoff=5.0, jitter=1.0)
    windows = []
    for _ in range(5):
        window, wait = b.next_wait()
        assert 0.0 <= wait <= window
        windows.append(window)
    assert windows == [INITIAL_BACKOFF, 1.0, 2.0, 4.0, 5.0]  # failed attempts: doubling, capped
    b.settle("moved")  # a 1001: the window restarts at --jitter, whatever it was
    assert [b.next_wait()[0] for _ in range(4)] == [1.0, 2.0, 4.0, 5.0]
    b.settle("keep")  # another drop without heartbeats: the back-off goes on
    assert b.next_wait()[0] == 5.0
    b.settle("reset")  # a connection that delivered a heartbeat
    assert b.next_wait()[0] == INITIAL_BACKOFF
    small = Backoff(max_backoff=0.3, jitter=1.0)
    small.settle("moved")
    assert small.next_wait()[0] == 0.3  # --max-backoff bounds the jitter window too


def _drop(tally: Tally, code: int, gap: float | None) -> None:
    ev = Evidence(url="ws://127.0.0.1:9/ws/health", opened=True, close_code=code,
                  close_reason="", age_at_close_s=1.0)
    tally.dropped(ev, 1.0)
    if gap is not None:
        tally.drop_records[-1].gap_s = gap
        tally._pending.clear()


@pytest.mark.parametrize(
    ("drops", "errors", "code", "why"),
    [
        ([], 0, 0, "no drop, no error"),
        ([(1001, 0.4), (1001, 4.9)], 0, 0, "every drop was a 1001 move"),
        ([(1001, 5.1)], 0, 1, "1 gap(s) over max-gap 5s"),
        ([(1001, None)], 0, 1, "not back from the last drop"),
        ([(1001, 0.2), (1006, 0.2)], 0, 1, "1 drop(s) other than 1001"),
        ([(1001, 0.2)], 1, 1, "1 error(s)"),
        ([(1012, 0.2)], 0, 1, "other than 1001"),
    ],
)
def test_verdict(drops: list[tuple[int, float | None]], errors: int, code: int,
                 why: str) -> None:
    tally = Tally(connections=1)
    for close_code, gap in drops:
        _drop(tally, close_code, gap)
    for _ in range(errors):
        tally.errored(Evidence(url="x", opened=True, error="stalled", error_detail="quiet"), 1.0)
    got, text = tally.verdict(5.0)
    assert (got, why in text) == (code, True), text
    assert f"exit {code}: " in tally.summary(1.0)


def test_verdict_never_connected() -> None:
    assert Tally().verdict() == (2, "never connected")


def test_gap_runs_from_the_drop_to_the_next_greeting() -> None:
    tally = Tally(connections=1)
    _drop(tally, 1001, None)
    tally.failed(Evidence(url="x", error="http_status", http_status=503))
    tally.failed(Evidence(url="x", error="refused"))
    [gap] = tally.greeted()
    assert gap is not None
    assert 0 <= gap < 1
    assert tally.drop_records[0].gap_s == gap
    assert tally.greeted() == []  # resolved once
    report = tally.report("ws://127.0.0.1:9/ws/health", 2.0)
    assert report.failed_attempts.http_statuses == {"503": 1}
    assert report.failed_attempts.by_kind == {"http_status": 1, "refused": 1}
    assert report.gaps.count == 1
    assert report.exit_code == 0
