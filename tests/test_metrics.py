"""``/metrics``: exact counter deltas for a known sequence, the nginx allow-list, the
dashboard's and the alert rules' metric names against a real scrape, ``promtool``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
import yaml
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from service.metrics import CONTENT_TYPE
from service.scheduler import LATENESS_BUCKETS, Buckets
from smoke.exporter import WatchMetrics
from testkit.nginx import Nginx
from testkit.ports import free_port
from testkit.rawws import TEXT, RawWebSocket, encode_frame

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULES = MONITORING / "alerts.yml"
ALLOWED = "http://localhost:3000"
T = TypeVar("T")

# The smoke checker's exporter (``ws-smoke watch --metrics-port``) and textfile
# (``ws-smoke --prometheus``) names the dashboard and the rules may use: issue 12's contract.
SMOKE_METRICS = {
    "ws_smoke_up": "gauge",
    "ws_smoke_drops_total": "counter",
    "ws_smoke_reconnect_seconds": "histogram",
    "ws_smoke_heartbeat_gap_seconds": "histogram",
    "ws_smoke_last_diagnosis_info": "gauge",
    "ws_smoke_check_passed": "gauge",
    "ws_smoke_last_run_timestamp_seconds": "gauge",
}
TEXTFILE_ONLY = {"ws_smoke_check_passed", "ws_smoke_last_run_timestamp_seconds"}


class Service(Protocol):
    """What the ``service`` / ``start_service`` fixtures hand out (see tests/conftest.py)."""

    port: int
    http: str
    ws: str

    @property
    def lines(self) -> list[str]: ...

    def wait_for_line(self, pattern: str, timeout: float = 10.0, start: int = 0) -> str: ...


Sample = tuple[str, frozenset[tuple[str, str]]]


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(bounded())


def get(url: str, source: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, from the local address ``source`` if given."""
    if source is None:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.headers["content-type"], response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["content-type"], exc.read().decode()
    host, _, rest = url.removeprefix("http://").partition("/")
    address, port = host.rsplit(":", 1)
    with socket.create_connection((address, int(port)), timeout=10,
                                  source_address=(source, 0)) as sock:
        sock.sendall(f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    status = int(head.split()[1])
    ctype = re.search(r"(?im)^content-type:\s*(.+?)\s*$", head)
    return status, ctype.group(1) if ctype else "", body


def scrape(service: Service) -> dict[Sample, float]:
    status, ctype, body = get(f"{service.http}/metrics")
    assert status == 200, body
    assert ctype == CONTENT_TYPE
    return parse(body)


def parse(text: str) -> dict[Sample, float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(before: dict[Sample, float], after: dict[Sample, float]) -> dict[Sample, float]:
    """What changed, without the process metrics (CPU, memory, fds move on their own)."""
    return {
        key: after[key] - before.get(key, 0.0)
        for key in after
        if key[0].startswith("ws_kit_") and after[key] != before.get(key, 0.0)
    }


def s(name: str, **labels: str) -> Sample:
    return name, frozenset(labels.items())


async def close_after_rate_limit(url: str) -> tuple[str, int | None]:
    """Three pings (the burst), then one more at once: the server closes with 1008.

    Returns the connection's client_id (from the pongs) and the close code."""
    async with connect(url) as ws:
        for _ in range(3):
            await ws.send('{"type":"ping"}')
            pong = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert pong["type"] == "pong"
        await ws.send('{"type":"ping"}')
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed as closed:
            return pong["client_id"], closed.rcvd.code if closed.rcvd else None


async def echo_twice_and_close(ws: ClientConnection) -> str:
    """Two echoes and a 1000 close; the connection's client_id."""
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome"
    for n in range(2):
        await ws.send(json.dumps({"type": "test", "data": n}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "echo"
    await ws.close(1000)
    return str(welcome["client_id"])


def test_known_sequence_gives_exact_counter_deltas(start_service: Callable[..., Service]) -> None:
    # Heartbeats every 30 s: none falls inside the test, so every count below is exact.
    service = start_service(WS_PING_INTERVAL="30", WS_PING_TIMEOUT="10", WS_RATE_LIMIT="5",
                            WS_RATE_BURST="3")
    before = scrape(service)
    assert before[s("ws_kit_connections_opened_total", endpoint="/ws/echo")] == 0
    async def connects() -> tuple[dict[Sample, float], list[str]]:
        first = await connect(f"{service.ws}/ws/echo", origin=ALLOWED)  # type: ignore[arg-type]
        second = await connect(f"{service.ws}/ws/echo", origin=ALLOWED)  # type: ignore[arg-type]
        during = await asyncio.to_thread(scrape, service)
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{service.ws}/ws", origin="http://evil.example")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        ids = [await echo_twice_and_close(first), await echo_twice_and_close(second)]
        limited, code = await close_after_rate_limit(f"{service.ws}/ws")
        assert code == 1008
        return during, [*ids, limited]

    during, client_ids = run(connects())
    assert during[s("ws_kit_connections_open", endpoint="/ws/echo")] == 2
    # A session's counts move into its endpoint's totals before its close line is logged.
    for client_id in client_ids:
        service.wait_for_line(rf'"event":"close".*"client_id":"{client_id}"')
    after = scrape(service)
    assert delta(before, after) == {
        s("ws_kit_connections_opened_total", endpoint="/ws/echo"): 2,
        s("ws_kit_connections_opened_total", endpoint="/ws"): 1,
        s("ws_kit_connections_closed_total", endpoint="/ws/echo", code="1000",
          closed_by="client"): 2,
        s("ws_kit_connections_closed_total", endpoint="/ws", code="1008", closed_by="server"): 1,
        s("ws_kit_handshakes_refused_total", reason="origin"): 1,
        s("ws_kit_messages_received_total", endpoint="/ws/echo"): 4,
        s("ws_kit_messages_received_total", endpoint="/ws"): 4,  # the 4th broke the limit
        s("ws_kit_messages_sent_total", endpoint="/ws/echo"): 6,  # 2 welcomes + 4 echoes
        s("ws_kit_messages_sent_total", endpoint="/ws"): 3,
        s("ws_kit_rate_limit_closes_total", endpoint="/ws"): 1,
        # The client answered that 1008 with its own close frame (the only server close here).
        s("ws_kit_close_acks_total", endpoint="/ws", ack="frame"): 1,
    }
    for path in ("/ws", "/ws/echo", "/ws/health"):
        assert after[s("ws_kit_connections_open", endpoint=path)] == 0
    for name in ("process_resident_memory_bytes", "process_open_fds",
                 "process_cpu_seconds_total"):
        assert after[s(name)] > 0, name


def test_auth_and_cap_refusals_are_counted_by_reason(
    start_service: Callable[..., Service],
) -> None:
    service = start_service(WS_AUTH_TOKEN="t0ken", WS_MAX_CONNECTIONS="1")
    before = scrape(service)
    token = {"Authorization": "Bearer t0ken"}

    async def refusals() -> list[int]:
        statuses = []
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"{service.ws}/ws", additional_headers=headers)
            statuses.append(refused.value.response.status_code)
        async with connect(f"{service.ws}/ws", additional_headers=token):
            with pytest.raises(InvalidStatus) as capped:
                await connect(f"{service.ws}/ws", additional_headers=token)
            statuses.append(capped.value.response.status_code)
        return statuses

    assert run(refusals()) == [401, 401, 503]
    service.wait_for_line(r'"event":"close"')
    changed = delta(before, scrape(service))
    assert {key: value for key, value in changed.items()
            if key[0] == "ws_kit_handshakes_refused_total"} == {
        s("ws_kit_handshakes_refused_total", reason="auth"): 2,
        s("ws_kit_handshakes_refused_total", reason="cap"): 1,
    }
    assert changed[s("ws_kit_connections_opened_total", endpoint="/ws")] == 1


def test_a_peer_that_stops_reading_is_a_send_deadline_drop(
    start_service: Callable[..., Service],
) -> None:
    service = start_service(WS_SEND_TIMEOUT="0.5", WS_PING_INTERVAL="30", WS_PING_TIMEOUT="10")
    before = scrape(service)
    ws = RawWebSocket(service.port)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        assert ws.handshake("/ws") == 101
        frame = encode_frame(TEXT, json.dumps({"type": "bulk", "data": "x" * 60_000}).encode())
        ws.sock.settimeout(0.5)
        with contextlib.suppress(TimeoutError, ConnectionResetError, BrokenPipeError):
            for _ in range(400):  # echo requests, never reading, until both directions are full
                ws.sock.sendall(frame)
        service.wait_for_line(r'"event":"close".*peer not reading', timeout=10)
    finally:
        ws.close()
    changed = delta(before, scrape(service))
    assert changed[s("ws_kit_send_deadline_drops_total", endpoint="/ws")] == 1
    assert changed[s("ws_kit_connections_closed_total", endpoint="/ws", code="1006",
                     closed_by="server")] == 1
    assert changed[s("ws_kit_connections_opened_total", endpoint="/ws")] == 1
    assert s("ws_kit_rate_limit_closes_total", endpoint="/ws") not in changed


def test_histogram_buckets_count_a_value_on_a_bound_in_that_bucket() -> None:
    buckets = Buckets((0.01, 0.1))
    for value in (0.0, 0.01, 0.05, 0.1, 7.0):
        buckets.observe(value)
    assert buckets.counts == [2, 2, 1]
    assert buckets.cumulative() == [("0.01", 2.0), ("0.1", 4.0), ("+Inf", 5.0)]
    assert buckets.sum == pytest.approx(7.16)


def test_heartbeats_and_their_lateness(service: Service) -> None:
    """Heartbeats on the 0.4 s grid; every one is in the lateness histogram, late by little."""

    async def three_beats() -> None:
        async with connect(f"{service.ws}/ws/health") as ws:
            beats = 0
            while beats < 3:
                beats += json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "heartbeat"

    run(three_beats())
    service.wait_for_line(r'"event":"close"')
    after = scrape(service)
    sent = sum(after[s("ws_kit_heartbeats_sent_total", endpoint=p)]
               for p in ("/ws", "/ws/echo", "/ws/health"))
    assert sent == after[s("ws_kit_heartbeats_sent_total", endpoint="/ws/health")] >= 3
    assert after[s("ws_kit_heartbeat_lateness_seconds_count")] == sent
    buckets = [after[s("ws_kit_heartbeat_lateness_seconds_bucket", le=str(b))]
               for b in LATENESS_BUCKETS]
    assert buckets == sorted(buckets), "cumulative"
    assert after[s("ws_kit_heartbeat_lateness_seconds_bucket", le="+Inf")] == sent
    # The sum agrees with the buckets (a value in (lower, upper] adds at least lower, at
    # most upper), however late a busy machine made the beats.
    counts = [b - a for a, b in zip([0.0, *buckets], [*buckets, sent], strict=True)]
    lowers, uppers = [0.0, *LATENESS_BUCKETS], [*LATENESS_BUCKETS, float("inf")]
    total = after[s("ws_kit_heartbeat_lateness_seconds_sum")]
    assert sum(c * lo for c, lo in zip(counts, lowers, strict=True)) <= total
    assert total <= sum(c * up for c, up in zip(counts, uppers, strict=True) if c)


def test_metrics_setting_turns_the_route_off(start_service: Callable[..., Service]) -> None:
    service = start_service(METRICS="false")
    assert get(f"{service.http}/metrics")[0] == 404
    assert get(f"{service.http}/health")[0] == 200


# --- nginx: /metrics only for the allow-list ------------------------------------------------


def render(out: Path, **extra: Any) -> subprocess.CompletedProcess[str]:
    """The nginx role's site, rendered by Ansible (infra/tests/render.yml) with ``extra``."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "infra" / "roles"),
           "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "infra/tests/inventory.yml",
         "infra/tests/render.yml", "-e", f"render_dir={out}", "-e", json.dumps(extra)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False,
    )


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[str], int]]:
    """Start nginx (``testkit.nginx``) on a rendered site file; the port it listens on."""
    started: list[Nginx] = []

    def start(site: str) -> int:
        port = int(re.findall(r"listen 127\.0\.0\.1:(\d+)[ ;]", site)[0])
        started.append(Nginx(tmp_path / f"nginx{len(started)}", site, port).start())
        return port

    yield start
    for server in started:
        server.stop()


def test_nginx_serves_metrics_only_to_the_allow_list(
    tmp_path: Path, service: Service, nginx: Callable[[str], int]
) -> None:
    assert yaml.safe_load((ROOT / "infra/roles/nginx/defaults/main.yml").read_text())[
        "nginx_metrics_allow"] == [], "nobody by default"
    listen = free_port()
    proc = render(tmp_path / "site", nginx_listen_address="127.0.0.1", nginx_listen_port=listen,
                  api_port=service.port, api_instances=1, nginx_metrics_allow=["127.0.0.2"])
    assert proc.returncode == 0, proc.stdout[-3000:]
    port = nginx((tmp_path / "site" / "nginx.conf").read_text())
    assert port == listen
    url = f"http://127.0.0.1:{port}/metrics"
    status, _, _ = get(url, source="127.0.0.1")
    assert status == 403, "an address not in nginx_metrics_allow"
    status, ctype, body = get(url, source="127.0.0.2")
    assert status == 200
    assert ctype == CONTENT_TYPE
    assert s("ws_kit_connections_opened_total", endpoint="/ws") in parse(body)
    assert get(f"http://127.0.0.1:{port}/health", source="127.0.0.1")[0] == 200

    default = render(tmp_path / "default", api_port=service.port, api_instances=1)
    assert default.returncode == 0, default.stdout[-3000:]
    block = re.search(r"location = /metrics \{(.*?)\}", (tmp_path / "default" / "nginx.conf")
                      .read_text(), re.DOTALL)
    assert block is not None
    assert [line.strip() for line in block.group(1).strip().splitlines()] == [
        "deny all;", "proxy_pass http://ws_kit_api;"]


def test_role_refuses_an_allow_list_that_is_not_addresses(tmp_path: Path) -> None:
    proc = render(tmp_path, nginx_metrics_allow=["10.0.0.0/8", "prometheus.internal"])
    assert proc.returncode != 0
    assert "nginx_metrics_allow must be a list of IPv4/IPv6 addresses or CIDRs" in proc.stdout
    assert not (tmp_path / "nginx.conf").exists()


# --- monitoring/: the dashboard and the alert rules -------------------------------------------

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset", "inf", "nan"}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".*", "$instance": ".*",
                     "$smoke_job": ".*"}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: apt-get install -y prometheus (scripts/test.sh does)"
    return path


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, labels or keywords)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    return {
        match.group()
        for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", expr)
        if match.group() not in PROMQL_WORDS and not expr[match.end():].lstrip().startswith("(")
    }


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        out += [(panel["title"], target["expr"]) for target in panel["targets"]]
    return out


def rule_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("_sum", "_count", "")}


def series_names(families: dict[str, str]) -> set[str]:
    """The series names of metric families {name: type} (a counter's ``_total``...)."""
    return {name + suffix for name, kind in families.items()
            for suffix in SUFFIXES.get(kind, ("",))}


def known_names(service: Service) -> set[str]:
    """What a real scrape of the service declares (with or without samples yet), the smoke
    contract's names, and Prometheus's own ``up``."""
    body = get(f"{service.http}/metrics")[2]
    declared = {family.name: family.type for family in text_string_to_metric_families(body)}
    smoke = {name.removesuffix("_total"): kind for name, kind in SMOKE_METRICS.items()}
    return series_names(declared) | series_names(smoke) | {"up"}


def test_the_watch_exporter_declares_the_names_the_dashboard_uses() -> None:
    """The smoke contract above against ``ws-smoke watch --metrics-port``'s own registry."""
    body = generate_latest(WatchMetrics("ws://127.0.0.1:1/ws/health").registry).decode()
    declared = {family.name: family.type for family in text_string_to_metric_families(body)}
    for name, kind in SMOKE_METRICS.items():
        if name not in TEXTFILE_ONLY:
            assert declared.get(name.removesuffix("_total")) == kind, name


def test_metric_name_extraction() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, instance) (rate(a_bucket{x="b c", le=~"1e-9"}'
        '[$__rate_interval]))) > 1e-9 or up{job="x"} == 0 unless on (i) b_total offset 5m'
    ) == {"a_bucket", "up", "b_total"}


def test_dashboard_and_rules_read_only_metrics_that_exist(service: Service) -> None:
    known = known_names(service)
    queries = dashboard_exprs()
    for where, expr in [*queries, *rule_exprs()]:
        assert metric_names(expr) <= known, (where, expr, metric_names(expr) - known)
    shown = set().union(*(metric_names(expr) for _, expr in queries))
    families = {re.sub(r"_(bucket|sum|count)$", "", name) if name.endswith(
        ("_bucket", "_sum", "_count")) and re.sub(r"_(sum|count)$", "_bucket", name) in known
        else name for name in known if name.startswith("ws_")}
    missing = {name for name in families if not any(s.startswith(name) for s in shown)}
    assert not missing, f"not on the dashboard: {sorted(missing)}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, its Grafana variables filled in, as a recording rule for promtool."""
    rules = []
    for n, (_, query) in enumerate(dashboard_exprs()):
        expr = query
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:panel_query_{n}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True,
                           text=True, check=False, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    for argv in (["check", "rules", RULES.name], ["test", "rules", "alerts.test.yml"]):
        result = subprocess.run([promtool(), *argv], cwd=MONITORING, capture_output=True,
                                text=True, check=False, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout
