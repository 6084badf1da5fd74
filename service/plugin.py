"""The kit as a Litestar plugin: ``Litestar(plugins=[WsKit(endpoints=[...])])``.

It adds to the app the seed's three endpoints and ``/health`` (what the smoke checks test),
``/metrics``, ``/ws-check``, the handshake guard (origin, token, the connection cap), the
drain on shutdown (1001 to every client), and runs the app's own typed endpoints
(:mod:`service.api`) with the same session. ``service.app.create_app`` is this plugin on
an empty app: there is one way to build the service.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from litestar import Request, Response, asgi, get
from litestar.enums import ScopeType
from litestar.exceptions import MethodNotAllowedException
from litestar.plugins import InitPluginProtocol

from service.check_page import check_page_route
from service.codes import CloseCode
from service.diagnostics import configure_logging
from service.endpoints import kit_endpoints, ping_config
from service.limits import ensure_descriptors, memory_bound
from service.messages import HealthResponse
from service.metrics import MEDIA_TYPE, metrics_registry, render
from service.registry import Registry
from service.scheduler import Scheduler
from service.security import handshake_middleware
from service.servers import load as load_server
from service.session import Session
from service.settings import Settings, load_settings

if TYPE_CHECKING:
    from litestar.config.app import AppConfig
    from litestar.handlers import BaseRouteHandler
    from litestar.types import Receive, Scope, Send

    from service.api import Endpoint
    from service.limits import Capacity
    from service.servers import Adapter

_log = logging.getLogger("service")


class WsKit(InitPluginProtocol):
    """ws-kit in a Litestar app; settings from the environment unless given.

    After the app is built, ``registry`` (the open sessions), ``scheduler``, ``server`` (the
    ``WS_SERVER`` adapter) and ``capacity`` are set; ``app.plugins.get(WsKit)`` finds it.
    """

    def __init__(self, settings: Settings | None = None, *,
                 endpoints: Sequence[Endpoint[Any]] = ()) -> None:
        self._settings = settings
        self._endpoints = tuple(endpoints)

    @property
    def settings(self) -> Settings:
        if self._settings is None:  # built once, from the environment, when first needed
            self._settings = load_settings()
        return self._settings

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        settings = self.settings
        configure_logging(settings.log_level)
        # Before anything listens: a cap the descriptor limit cannot hold stops start-up here.
        self.capacity: Capacity = ensure_descriptors(settings)
        self.server: Adapter = load_server(settings)
        _log.info("server: %s (WS_SERVER)", self.server.name)
        _log.info("%s", self.capacity.describe(settings))
        _log.info("%s", memory_bound(settings, self.capacity, self.server))
        self.registry = Registry()
        # One timer wheel for every connection; its tick bounds heartbeat lateness, and a
        # send blocked for WS_SEND_TIMEOUT is found within a tenth of it more.
        self.scheduler = Scheduler(
            resolution=max(0.005, min(0.02, settings.ws_ping_interval / 40)),
            send_check_every=settings.ws_send_timeout / 10)
        endpoints = (*kit_endpoints(settings), *self._endpoints)
        paths = [endpoint.path for endpoint in endpoints]
        if duplicated := sorted({path for path in paths if paths.count(path) > 1}):
            raise ValueError(f"two ws-kit endpoints on {', '.join(duplicated)}")
        app_config.route_handlers.extend([
            self._health_route(),
            check_page_route(settings),
            *([self._metrics_route()] if settings.metrics else []),
            *(self._ws_route(endpoint) for endpoint in endpoints),
        ])
        # Outermost of the app's middleware: a refused handshake costs nothing further.
        app_config.middleware.insert(
            0, handshake_middleware(settings, self.registry, self.capacity.max_connections))
        app_config.signature_namespace.update(
            {"Request": Request, "Response": Response, "Any": Any})
        app_config.on_shutdown.append(self._drain_if_serving)
        return app_config

    async def drain(self) -> None:
        """1001 to every client, new handshakes refused with 503, within WS_SHUTDOWN_TIMEOUT."""
        registry = self.registry
        open_count = len(registry)
        _log.info("draining: new handshakes get 503, %d connection(s) get 1001", open_count)
        left = await registry.close_all(
            CloseCode.GOING_AWAY, "server shutting down", self.settings.ws_shutdown_timeout)
        _log.info("shutdown: closed %d connection(s) with 1001, %d did not finish",
                  open_count, left)

    async def _drain_if_serving(self) -> None:
        # Under ws-service the drain ran before the server stopped; under a plain server run
        # (granian, uvicorn) the app's shutdown is the first the kit hears of it.
        if not self.registry.closing:
            await self.drain()

    def _ws_route(self, endpoint: Endpoint[Any]) -> BaseRouteHandler:
        settings, registry, scheduler = self.settings, self.registry, self.scheduler
        connect = self.server.connect
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

        return asgi(endpoint.path, name=endpoint.path, is_mount=False, copy_scope=False)(handler)

    def _health_route(self) -> BaseRouteHandler:
        registry = self.registry
        config = ping_config(self.settings)

        @get("/health", sync_to_thread=False)
        def health(request: Request[Any, Any, Any]) -> Response[HealthResponse]:
            # 503 while draining: a proxy or load balancer stops sending new clients here.
            draining = registry.closing
            body = HealthResponse(
                status="draining" if draining else "ok", server_time=time.time(),
                connections=len(registry), config=config,
            )
            return Response(body, status_code=503 if draining else 200)

        return health

    def _metrics_route(self) -> BaseRouteHandler:
        collectors = metrics_registry(self.registry, self.scheduler,
                                      self.capacity.max_connections)

        @get("/metrics", sync_to_thread=False, include_in_schema=False)
        def metrics() -> Response[bytes]:
            # In the event loop, between two events: the counters it reads are consistent.
            return Response(render(collectors), media_type=MEDIA_TYPE)

        return metrics
