"""The kit inside an app of its own (examples/calc), on both servers, through the role's nginx:
the smoke checks pass on the kit's endpoints, and the app's typed endpoint gets the same
heartbeats, error replies, log lines and metrics."""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from testkit.nginx import NginxProxy
from testkit.paths import REPO
from testkit.ports import free_port
from testkit.service import ServiceProcess, StartService, service_env, ws_service
from testkit.smoke_cli import run_smoke

ON_SERVERS = ("granian", "uvicorn")
EXAMPLE = REPO / "examples" / "calc"
INTERVAL, TIMEOUT = 0.4, 0.2


def http(proxy: NginxProxy) -> str:
    return proxy.url.replace("ws://", "http://", 1)


@pytest.fixture
def calc(start_service: StartService) -> ServiceProcess:
    """``WS_APP=calc_app:create_app ws-service``, the example installed (on the path)."""
    return start_service(WS_APP="calc_app:create_app", PYTHONPATH=str(EXAMPLE),
                         WS_PING_INTERVAL=str(INTERVAL), WS_PING_TIMEOUT=str(TIMEOUT))


@pytest.fixture
def proxy(calc: ServiceProcess, tmp_path: Path) -> Iterator[NginxProxy]:
    # The app's own paths are added to the role's lists, as its deployment would.
    locations = {"nginx_ws_locations": ["/ws", "/ws/echo", "/ws/health", "/ws/calc"],
                 "nginx_http_locations": ["/health", "/ws-check", "/"]}
    nginx = NginxProxy(tmp_path / "nginx", calc.port, 0, INTERVAL, TIMEOUT,
                       role_vars=json.dumps(locations))
    yield nginx.start()
    nginx.stop()


def test_the_smoke_checks_pass_on_the_kits_endpoints_in_the_apps_own_app(
    calc: ServiceProcess, proxy: NginxProxy, tmp_path: Path,
) -> None:
    run = run_smoke(tmp_path, proxy.url, "--sustain", "2", "--grace", "1",
                    "--latency-limit", "1000")
    assert run.code == 0, run.out
    assert run.report["counts"]["fail"] == 0
    with urllib.request.urlopen(f"{http(proxy)}/") as answer:  # the app's own HTTP route
        assert json.load(answer) == {"calc": "/ws/calc"}
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{http(proxy)}/ws/calc")
    assert refused.value.code == 405
    assert refused.value.headers["Allow"] == "websocket"


def test_the_apps_endpoint_lives_past_the_proxys_idle_timeout_on_the_kits_heartbeats(
    calc: ServiceProcess, proxy: NginxProxy,
) -> None:
    ws_url = f"{proxy.url}/ws/calc"
    hold = 2 * proxy.read_timeout  # nginx would cut a silent connection at read_timeout
    with connect(ws_url, open_timeout=10) as ws:
        ws.send('{"type": "add", "a": 2, "b": 3}')
        result = json.loads(ws.recv(timeout=10))
        assert result["type"] == "result"
        assert result["value"] == 5
        client_id = result["client_id"]
        assert client_id.startswith("calc_client_")
        ws.send('{"type": "mul", "a": "x", "b": 3}')
        error = json.loads(ws.recv(timeout=10))
        assert (error["type"], error["error"]) == ("error", "invalid_message")
        assert error["detail"] == "Expected `float`, got `str` - at `$.a`"
        heartbeats, deadline = 0, time.monotonic() + hold
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = json.loads(ws.recv(timeout=left))
            except TimeoutError:
                break
            if message["type"] == "heartbeat":
                heartbeats += 1
                ws.send(json.dumps({"type": "pong", "ping_number": message["ping_number"]}))
        # An idle endpoint: one heartbeat per interval with nothing sent, less one for phase.
        assert heartbeats >= math.floor(hold / INTERVAL) - 2
        ws.send('{"type": "mul", "a": 4, "b": 2.5}')
        assert json.loads(ws.recv(timeout=10))["value"] == 10
    line = calc.wait_for_line(rf'"event":"close".*"client_id":"{client_id}"', 10)
    event = json.loads(line.split("WS_DIAGNOSTICS ", 1)[1])
    assert event["endpoint"] == "/ws/calc"
    assert (event["code"], event["closed_by"]) == (1000, "client")
    assert event["messages_in"] == 3 + heartbeats
    assert event["pongs_received"] == heartbeats
    with urllib.request.urlopen(f"{calc.http}/metrics") as answer:
        families = {f.name: f for f in text_string_to_metric_families(answer.read().decode())}
    opened = {s.labels["endpoint"]: s.value for s in families["ws_kit_connections_opened"].samples
              if s.name.endswith("_total")}
    assert opened["/ws/calc"] == 1


@pytest.mark.parametrize(("app", "says"), [
    ("nowhere:create_app", "WS_APP=nowhere:create_app: no module named 'nowhere'"),
    ("calc_app:missing", "WS_APP=calc_app:missing: calc_app has no function 'missing'"),
    ("testkit.apps:without_the_kit",
     "WS_APP=testkit.apps:without_the_kit: the app has no WsKit plugin"),
    ("calc_app", "WS_APP='calc_app' is invalid"),
])
def test_a_bad_ws_app_stops_start_up_naming_it(app: str, says: str) -> None:
    done = subprocess.run(
        [ws_service()], env=service_env(PORT=str(free_port()), WS_APP=app, PYTHONPATH=str(EXAMPLE)),
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr
