"""Prometheus metrics from ws-smoke: a live exporter for ``watch``, a textfile for check runs.

Uptime monitors say "up or not"; what an operator chasing "the socket keeps dropping" needs to
graph and alert on is how connections end (close codes), how long the way back takes, how
late heartbeats come and what the checker diagnosed. ``ws-smoke watch --metrics-port`` serves
that while it watches; ``ws-smoke --prometheus FILE`` leaves one run's results where
node_exporter's textfile collector reads them (cron, CI).

Both use their own :class:`CollectorRegistry`, so nothing of prometheus_client's global
default registry (or another library's metrics in the same process) leaks in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
    write_to_textfile,
)

from smoke import __version__
from smoke.model import Report

RECONNECT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Seconds from a drop to the next greeting: a 1001 move is back within the jitter (1 s by
default), a restart within seconds; minutes is an outage."""
HEARTBEAT_GAP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0,
                         40.0, 45.0, 60.0, 90.0, 120.0)
"""Seconds between heartbeats: fine around the usual intervals (25-30 s) and the proxy idle
timeouts they must stay below (nginx and AWS ALB 60 s), coarse for short test intervals."""
KNOWN_CLOSE_CODES = (1001, 1006, 1011)
"""Exported at 0 from the start, so ``increase()`` sees the first drop with these codes (a
series that appears already at 1 has no increase)."""


class WatchMetrics:
    """What ``ws-smoke watch`` sees, as Prometheus metrics; ``watch`` calls one method per
    event (all of them cheap and thread-safe: scrapes run on the server's own thread)."""

    def __init__(self, url: str, registry: CollectorRegistry | None = None) -> None:
        # No *_created series beside every counter and histogram: clutter for a probe.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # The watcher's own start time, memory and fds: a counter reset is then visibly a
        # restart of the watcher, not of the service it watches.
        ProcessCollector(registry=r)
        Info("ws_smoke_watch", "What this watcher watches", registry=r).info(
            {"url": url, "version": __version__})
        self.up = Gauge("ws_smoke_up", "1 while connected to /ws/health (greeting received), "
                        "0 after a drop, an error or a failed attempt", registry=r)
        self.connections = Counter("ws_smoke_connections", "Connections that got their "
                                   "greeting", registry=r)
        self.drops = Counter("ws_smoke_drops", "Connections that ended without us closing "
                             "them, by close code (1006: no close frame)", ["code"], registry=r)
        for code in KNOWN_CLOSE_CODES:
            self.drops.labels(code=str(code))
        self.errors = Counter("ws_smoke_errors", "Open connections we closed because they "
                              "misbehaved (stalled, off-contract), by kind", ["kind"],
                              registry=r)
        self.failed = Counter("ws_smoke_connect_failures", "Failed connection attempts, by "
                              "kind (refused, http_status, connect_timeout, ...) and HTTP "
                              "status (empty without one)", ["kind", "status"], registry=r)
        self.reconnect = Histogram("ws_smoke_reconnect_seconds", "Seconds from a drop or "
                                   "error until the next greeting", registry=r,
                                   buckets=RECONNECT_BUCKETS)
        self.heartbeats = Counter("ws_smoke_heartbeats", "Heartbeats received", registry=r)
        self.heartbeat_gap = Histogram("ws_smoke_heartbeat_gap_seconds", "Seconds between "
                                       "heartbeats on one connection (the first from the "
                                       "greeting)", registry=r, buckets=HEARTBEAT_GAP_BUCKETS)
        self.ping_interval = Gauge("ws_smoke_server_ping_interval_seconds", "The server's "
                                   "WS_PING_INTERVAL, from its last greeting", registry=r)
        self.diagnosis = Gauge("ws_smoke_last_diagnosis_info", "1 for the diagnosis of the "
                               "last drop, error or failed attempt (the code is the label)",
                               ["code"], registry=r)
        self.diagnosed_at = Gauge("ws_smoke_last_diagnosis_timestamp_seconds", "When the last "
                                  "diagnosis was made (Unix time)", registry=r)
        self._last_code: str | None = None
        self._lock = threading.Lock()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- events, called by the watch loop ------------------------------------------------------

    def connected(self, gaps: Iterable[float], ping_interval: float | None) -> None:
        self.connections.inc()
        for gap in gaps:
            self.reconnect.observe(gap)
        if ping_interval is not None:
            self.ping_interval.set(ping_interval)
        self.up.set(1)

    def heartbeat(self, gap: float) -> None:
        self.heartbeats.inc()
        self.heartbeat_gap.observe(gap)

    def dropped(self, code: int) -> None:
        self.up.set(0)
        self.drops.labels(code=str(code)).inc()

    def errored(self, kind: str) -> None:
        self.up.set(0)
        self.errors.labels(kind=kind).inc()

    def failed_attempt(self, kind: str, http_status: int | None) -> None:
        self.up.set(0)
        status = str(http_status) if http_status is not None and http_status != 101 else ""
        self.failed.labels(kind=kind, status=status).inc()

    def diagnosed(self, code: str) -> None:
        """Only the last code has a series: an alert on one code clears when another comes."""
        with self._lock:
            if self._last_code is not None and self._last_code != code:
                self.diagnosis.remove(self._last_code)
            self._last_code = code
            self.diagnosis.labels(code=code).set(1)
        self.diagnosed_at.set_to_current_time()

    def stopped(self) -> None:
        self.up.set(0)

    # -- serving -------------------------------------------------------------------------------

    def serve(self, address: str, port: int) -> tuple[str, int]:
        """Serve ``/metrics`` on a daemon thread; the (host, port) bound (port 0: any free
        one). Raises OSError when the address cannot be bound."""
        self._server, self._thread = start_http_server(port, address, registry=self.registry)
        host, bound = self._server.server_address[:2]
        return str(host), int(bound)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


def metrics_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"


# -- the textfile of one check run -------------------------------------------------------------


def report_registry(report: Report) -> CollectorRegistry:
    """One run as metrics. Every series carries ``target``: node_exporter merges all textfiles
    in its directory, so runs against several targets (one file each) must not collide."""
    r = CollectorRegistry()
    t = report.target
    passed = Gauge("ws_smoke_check_passed", "1 the check passed, 0 it failed (a skipped check "
                   "has no sample here, see ws_smoke_check_skipped)", ["target", "check", "via"],
                   registry=r)
    skipped = Gauge("ws_smoke_check_skipped", "1 for each check this run skipped",
                    ["target", "check", "via"], registry=r)
    duration = Gauge("ws_smoke_check_duration_seconds", "Seconds each check took",
                     ["target", "check", "via"], registry=r)
    rtt = Gauge("ws_smoke_round_trip_seconds", "Round trips on /ws/echo (the latency check), "
                "by quantile", ["target", "via", "quantile"], registry=r)
    for result in report.results:
        labels = {"target": t, "check": result.name, "via": result.via}
        if result.status == "skip":
            skipped.labels(**labels).set(1)
        else:
            passed.labels(**labels).set(1 if result.status == "pass" else 0)
        duration.labels(**labels).set(result.duration_s)
        for key, q in (("p50_ms", "0.5"), ("p95_ms", "0.95"), ("p99_ms", "0.99")):
            if result.name == "latency" and key in result.metrics:
                rtt.labels(target=t, via=result.via, quantile=q).set(result.metrics[key] / 1000)
    diagnosis = Gauge("ws_smoke_diagnosis_info", "1 for each diagnosis of this run (the code "
                      "is the label)", ["target", "code"], registry=r)
    for d in report.diagnoses:
        diagnosis.labels(target=t, code=d.code).set(1)
    Gauge("ws_smoke_exit_code", "The run's exit status: 0 all passed, 1 a check failed, 2 "
          "unreachable or usage error", ["target"], registry=r).labels(target=t).set(
              report.exit_code)
    Gauge("ws_smoke_run_duration_seconds", "Seconds the whole run took", ["target"],
          registry=r).labels(target=t).set(report.duration_s)
    Gauge("ws_smoke_last_run_timestamp_seconds", "When the run ended (Unix time): alert when "
          "it gets old, the cron job stopped", ["target"], registry=r).labels(target=t).set(
              report.started_at + report.duration_s)
    expiry = _cert_expiry(report)
    if expiry is not None:
        Gauge("ws_smoke_tls_cert_expiry_timestamp_seconds", "When the server's certificate "
              "expires (Unix time; wss:// only)", ["target"], registry=r).labels(
                  target=t).set(expiry)
    return r


def _cert_expiry(report: Report) -> float | None:
    """The certificate's notAfter, from the TLS facts a wss:// run reports."""
    not_after = report.tls.not_after if report.tls is not None else None
    if not_after is None:
        return None
    try:
        return datetime.fromisoformat(not_after).timestamp()
    except ValueError:
        return None


def write_textfile(report: Report, path: Path) -> None:
    """Write to a temporary file beside ``path`` and rename it over ``path``, as
    node_exporter's textfile collector requires: it never reads half a file."""
    write_to_textfile(str(path), report_registry(report))
