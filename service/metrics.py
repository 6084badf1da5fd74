"""Prometheus metrics read at scrape time from counters the connection core already keeps.

The per-message path pays nothing for metrics: a session counts its messages in plain ints
(``messages_in``/``messages_out``, which its close log line reports anyway), the policy counts
heartbeats, and the registry folds a closed session's counts into its endpoint's
:class:`EndpointTotals` once, at close. No ``prometheus_client`` object is touched per message
or per connection: :class:`ServiceCollector` walks the registry when ``/metrics`` is scraped
(in the event loop, so it sees a consistent picture), which costs O(open connections).

Heartbeat lateness (how long after its grid time a heartbeat was handed to the sender: the
scheduler's tick plus event-loop lag) is the scheduler's :class:`~service.scheduler.Buckets` of
plain ints, bumped once per heartbeat and exposed as a histogram.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, get_args

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from service.connection import CloseAck

if TYPE_CHECKING:
    from service.registry import Registry
    from service.scheduler import Scheduler

__all__ = ["CONTENT_TYPE", "MEDIA_TYPE", "ServiceCollector", "metrics_registry", "render"]


# The text format every Prometheus 2.x reads (the names here need no UTF-8 escaping), as
# ``text/plain; version=0.0.4; charset=utf-8``; Litestar appends the charset to MEDIA_TYPE.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MEDIA_TYPE = CONTENT_TYPE.removesuffix("; charset=utf-8")

CLOSE_ACKS = get_args(CloseAck)

# The handshake middleware's log reasons (service/security.py), as the metric's label.
REFUSAL_REASONS = {
    "origin missing": "origin",
    "origin not allowed": "origin",
    "bad or missing bearer token": "auth",
    "connection cap reached": "cap",
    "draining": "draining",
}


class ServiceCollector(Collector):
    """The service's own metrics, built from the registry and the scheduler at each scrape."""

    def __init__(self, registry: Registry, scheduler: Scheduler, capacity: int) -> None:
        self.registry = registry
        self.scheduler = scheduler
        self.capacity = capacity

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        registry = self.registry
        # Per endpoint, what its open sessions hold: connections, messages in, out, heartbeats.
        # (Registry.add files every session's endpoint in registry.totals.)
        live = {path: [0, 0, 0, 0] for path in registry.totals}
        for session in registry.sessions():
            row = live[session.path]
            row[0] += 1
            row[1] += session.messages_in
            row[2] += session.messages_out
            row[3] += session.ping_count

        endpoint = ["endpoint"]
        opened = CounterMetricFamily(
            "ws_kit_connections_opened", "WebSocket connections accepted", labels=endpoint)
        open_ = GaugeMetricFamily(
            "ws_kit_connections_open", "WebSocket connections open now", labels=endpoint)
        closed = CounterMetricFamily(
            "ws_kit_connections_closed",
            "WebSocket connections ended, by close code and who closed (unknown: 1005, a close "
            "without status or a dropped TCP connection)",
            labels=["endpoint", "code", "closed_by"])
        received = CounterMetricFamily(
            "ws_kit_messages_received", "Data messages received from clients", labels=endpoint)
        sent = CounterMetricFamily(
            "ws_kit_messages_sent", "Messages sent to clients (replies, greetings, heartbeats)",
            labels=endpoint)
        beats = CounterMetricFamily(
            "ws_kit_heartbeats_sent", "Application heartbeats sent", labels=endpoint)
        drops = CounterMetricFamily(
            "ws_kit_send_deadline_drops",
            "Peers dropped (1006, no frame) because a send stayed blocked for WS_SEND_TIMEOUT",
            labels=endpoint)
        rate = CounterMetricFamily(
            "ws_kit_rate_limit_closes", "Connections closed with 1008 for exceeding WS_RATE_LIMIT",
            labels=endpoint)
        acks = CounterMetricFamily(
            "ws_kit_close_acks",
            "Server closes by how the client answered the close frame: frame (its own close "
            "frame), eof, reset, timeout (nothing within the linger)",
            labels=["endpoint", "ack"])
        for path, totals in sorted(registry.totals.items()):
            now = live[path]
            opened.add_metric([path], float(totals.opened))
            open_.add_metric([path], float(now[0]))
            for (code, by), count in sorted(totals.closes.items()):
                closed.add_metric([path, str(code), by], float(count))
            received.add_metric([path], float(totals.messages_in + now[1]))
            sent.add_metric([path], float(totals.messages_out + now[2]))
            beats.add_metric([path], float(totals.heartbeats + now[3]))
            drops.add_metric([path], float(totals.send_deadline_drops))
            rate.add_metric([path], float(totals.rate_limit_closes))
            for ack in CLOSE_ACKS:
                acks.add_metric([path, ack], float(totals.close_acks.get(ack, 0)))
        yield from (opened, open_, closed, received, sent, beats, drops, rate, acks)

        refused = CounterMetricFamily(
            "ws_kit_handshakes_refused",
            "WebSocket handshakes refused before accept, by reason (origin, auth, cap, draining)",
            labels=["reason"])
        for reason in sorted({*REFUSAL_REASONS.values(), *registry.refused}):
            refused.add_metric([reason], float(registry.refused.get(reason, 0)))
        yield refused

        lateness = self.scheduler.lateness
        yield HistogramMetricFamily(
            "ws_kit_heartbeat_lateness_seconds",
            "How long after its due time each heartbeat was handed to the sender",
            buckets=lateness.cumulative(), sum_value=lateness.sum,
        )
        yield GaugeMetricFamily(
            "ws_kit_capacity_connections",
            "WebSockets this instance accepts before handshakes get 503 (service.limits)",
            value=float(self.capacity))
        yield GaugeMetricFamily("ws_kit_draining", "1 while the instance drains (shutdown)",
                                value=1.0 if registry.closing else 0.0)


def metrics_registry(
    registry: Registry, scheduler: Scheduler, capacity: int,
) -> CollectorRegistry:
    """A private registry (not prometheus_client's global one): this service and the process."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(ServiceCollector(registry, scheduler, capacity))
    ProcessCollector(registry=collectors)
    return collectors


def render(collectors: CollectorRegistry) -> bytes:
    """The text exposition format, version 0.0.4 (:data:`CONTENT_TYPE`)."""
    return generate_latest(collectors)
