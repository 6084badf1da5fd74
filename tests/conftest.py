"""Fixtures only: the machinery they use lives in ``testkit`` (imported, never this file)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.service import SHORT_INTERVALS, ServiceProcess, StartService
from testkit.service import start_service as launch


@pytest.fixture
def start_service() -> Iterator[StartService]:
    """Start ``ws-service`` with the given environment; every process is stopped afterwards.

    Heartbeat intervals default to short ones (0.4 s, timeout 0.2 s) unless given.
    """
    started: list[ServiceProcess] = []

    def start(argv: list[str] | None = None, ready: str | None = "ready: serving on",
              **env: str) -> ServiceProcess:
        proc = launch({**SHORT_INTERVALS, **env}, argv, ready=None)
        started.append(proc)
        if ready:
            proc.wait_for_line(ready, timeout=20)
        return proc

    yield start
    for proc in started:
        proc.stop(timeout=10)


@pytest.fixture
def service(start_service: StartService) -> ServiceProcess:
    """The service with short heartbeat intervals (0.4 s, timeout 0.2 s) and default origins."""
    return start_service()
