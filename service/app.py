"""The application factory: ``create_app(settings)`` wires settings into every endpoint."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from litestar import Litestar, Request, Response, WebSocket, asgi, get
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.exceptions import MethodNotAllowedException
from litestar.types import Receive, Scope, Send

from service.check_page import check_page_route
from service.diagnostics import configure_logging
from service.endpoints import EchoEndpoint, HealthEndpoint, WsEndpoint, ping_config
from service.limits import ensure_descriptors, memory_bound
from service.messages import HealthResponse
from service.metrics import MEDIA_TYPE, metrics_registry, render
from service.registry import Registry
from service.scheduler import Scheduler
from service.security import handshake_middleware
from service.servers import load as load_server
from service.session import Endpoint, Session
from service.settings import Settings, load_settings

_log = logging.getLogger("service")


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app; with no argument, settings come from the environment (Granian's --factory)."""
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    # Before anything listens: a cap the descriptor limit cannot hold stops start-up here.
    capacity = ensure_descriptors(settings)
    server = load_server(settings)
    _log.info("server: %s (WS_SERVER)", server.name)
    _log.info("%s", capacity.describe(settings))
    _log.info("%s", memory_bound(settings, capacity, server))
    registry = Registry()
    # One timer wheel for every connection; its tick bounds heartbeat lateness.
    scheduler = Scheduler(resolution=max(0.005, min(0.02, settings.ws_ping_interval / 40)))
    health_config = ping_config(settings)
    connect = server.connect

    def ws_route(endpoint: Endpoint) -> Any:
        registry.endpoint_totals(endpoint.path)  # its series exist (at 0) from the start

        # A raw ASGI route: no framework wrapper between the server and the session
        # (service.servers.asgi); a plain request gets what Litestar gives a WebSocket route.
        async def handler(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.WEBSOCKET:
                raise MethodNotAllowedException(headers={"Allow": "websocket"})
            session = Session(connect(scope, receive, send), endpoint, settings,
                              registry=registry, scheduler=scheduler)
            # A task of its own: each message then wakes the session's few frames, not the
            # dozen of Litestar's and the middleware's above this handler (docs/benchmarks.md).
            await asyncio.get_running_loop().create_task(session.run())

        return asgi(endpoint.path, name=endpoint.path, is_mount=False)(handler)

    @get("/health", sync_to_thread=False)
    def health(request: Request[Any, Any, Any]) -> Response[HealthResponse]:
        # 503 while draining: a proxy or load balancer stops sending new clients here.
        draining = registry.closing
        body = HealthResponse(
            status="draining" if draining else "ok", server_time=time.time(),
            connections=len(registry), config=health_config,
        )
        return Response(body, status_code=503 if draining else 200)

    collectors = metrics_registry(registry, scheduler, capacity.max_connections)

    @get("/metrics", sync_to_thread=False, include_in_schema=False)
    def metrics() -> Response[bytes]:
        # In the event loop, between two events: the counters it reads are consistent.
        return Response(render(collectors), media_type=MEDIA_TYPE)

    return Litestar(
        route_handlers=[
            health,
            check_page_route(settings),
            *([metrics] if settings.metrics else []),
            ws_route(EchoEndpoint(settings)),
            ws_route(HealthEndpoint(settings)),
            ws_route(WsEndpoint()),
        ],
        middleware=[handshake_middleware(settings, registry, capacity.max_connections)],
        state=State({"settings": settings, "registry": registry, "scheduler": scheduler,
                     "capacity": capacity, "server": server}),
        openapi_config=None,
        logging_config=None,
        signature_namespace={
            "WebSocket": WebSocket, "Request": Request, "Response": Response, "Any": Any,
        },
    )
