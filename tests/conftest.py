"""Fixtures only: the machinery they use lives in ``testkit`` (imported, never this file)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.service import SHORT_INTERVALS, TRACEBACK, ServiceProcess, StartService
from testkit.service import start_service as launch


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module's ``ON_SERVERS`` runs each of its tests that starts the service on each."""
    servers = getattr(metafunc.module, "ON_SERVERS", None)
    only = metafunc.definition.get_closest_marker("server")
    if only is not None:
        servers = only.args
    if servers and "ws_server" in metafunc.fixturenames:
        metafunc.parametrize("ws_server", servers, indirect=True)


@pytest.fixture
def ws_server(request: pytest.FixtureRequest) -> str:
    """The server ``ws-service`` embeds (``WS_SERVER``): Granian, unless the module's
    ``ON_SERVERS`` lists several."""
    return str(getattr(request, "param", "granian"))


@pytest.fixture
def start_service(ws_server: str) -> Iterator[StartService]:
    """Start ``ws-service`` with the given environment; every process is stopped afterwards.

    Heartbeat intervals default to short ones (0.4 s, timeout 0.2 s) unless given; the server
    is ``ws_server``'s unless ``WS_SERVER`` is given.
    """
    started: list[ServiceProcess] = []

    def start(argv: list[str] | None = None, ready: str | None = "ready: serving on",
              **env: str) -> ServiceProcess:
        proc = launch({**SHORT_INTERVALS, "WS_SERVER": ws_server, **env}, argv, ready=None)
        started.append(proc)
        if ready:
            proc.wait_for_line(ready, timeout=20)
        return proc

    yield start
    # A service that crashed, or logged a traceback, fails the test that started it, even when
    # the test's own asserts passed.
    problems = []
    for proc in started:
        running = proc.proc.poll() is None
        code = proc.stop(timeout=10)
        if running and code != 0:
            problems.append(f"the service on :{proc.port} exited {code} on SIGTERM, not 0")
        if TRACEBACK in proc.output() and not proc.tracebacks_expected:
            problems.append(f"the service on :{proc.port} printed a traceback")
    if problems:
        pytest.fail("; ".join(problems) + f"\n{started[-1].output()[-4000:]}")


@pytest.fixture
def service(start_service: StartService) -> ServiceProcess:
    """The service with short heartbeat intervals (0.4 s, timeout 0.2 s) and default origins."""
    return start_service()
