"""Drive ``infra/tests/ws_fleet.py`` (N reconnecting clients) from a test: start, wait, stop."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testkit.paths import REPO
from testkit.processes import LineLog

FLEET = REPO / "infra" / "tests" / "ws_fleet.py"
ORIGIN = "http://localhost:3000"  # in the service's default ALLOWED_ORIGINS

Status = dict[str, int]


class FleetRun:
    def __init__(self, folder: Path, url: str, clients: int, *extra: str) -> None:
        self.status_file = folder / "status.json"
        self.report_file = folder / "report.json"
        self.stop_file = folder / "stop"
        self.log = LineLog([sys.executable, str(FLEET), url, "--clients", str(clients),
                            "--origin", ORIGIN, "--status-file", str(self.status_file),
                            "--report", str(self.report_file), "--stop-file",
                            str(self.stop_file), *extra], cwd=REPO)

    def status(self) -> Status | None:
        try:
            value: Status = json.loads(self.status_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return value

    def wait_status(self, ok: Callable[[Status], bool], timeout: float) -> Status:
        """Poll the status file until ``ok``; fail at once if the fleet process exits."""
        proc = self.log.proc
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status is not None and ok(status):
                return status
            if proc.poll() is not None:
                raise AssertionError(f"fleet exited {proc.returncode}:\n{self.log.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"status {status} after {timeout}s:\n{self.log.text()}")
            # The poll interval is a bounded wait on the fleet process itself.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.05)

    def finish(self) -> dict[str, Any]:
        self.stop_file.touch()
        code = self.log.finish(30)
        assert code == 0, self.log.text()
        report: dict[str, Any] = json.loads(self.report_file.read_text())
        return report


