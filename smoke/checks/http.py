"""``GET /health``: the plain HTTP request a proxy must route to the service."""

from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
import time
import urllib.error
import urllib.request
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import msgspec

from service.messages import HealthResponse
from smoke.model import Evidence, Status
from smoke.recorder import Run
from smoke.target import Options
from smoke.tls import classify, client_context, explain

_health_decoder = msgspec.json.Decoder(HealthResponse)


class _Resolving(http.client.HTTPConnection):
    """Connects to the address ``--resolve`` chose; Host (and, over TLS, SNI and the
    certificate check) stay the URL's."""

    def __init__(self, *args: Any, options: Options, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._options = options

    def _resolved(self) -> socket.socket | None:
        address = self._options.address_for(self.host, self.port)
        if address is None:
            return None
        return socket.create_connection((address, self.port), self.timeout,
                                        self.source_address)  # type: ignore[attr-defined]


class _ResolvedHTTP(_Resolving):
    def connect(self) -> None:
        sock = self._resolved()
        if sock is None:
            super().connect()
        else:
            self.sock = sock


class _ResolvedHTTPS(_Resolving, http.client.HTTPSConnection):
    def connect(self) -> None:
        sock = self._resolved()
        if sock is None:
            super().connect()
        else:
            context: ssl.SSLContext = self._context  # type: ignore[attr-defined]
            self.sock = context.wrap_socket(sock, server_hostname=self.host)


class _Handler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    def __init__(self, options: Options) -> None:
        urllib.request.HTTPHandler.__init__(self)
        urllib.request.HTTPSHandler.__init__(self, context=client_context(options))
        self._options = options

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_ResolvedHTTP, options=self._options), req)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_ResolvedHTTPS, options=self._options), req,
                            context=self._context)  # type: ignore[attr-defined]


async def http_health(run: Run) -> None:
    started = time.monotonic()
    url = run.target.http("/health")
    evidence = Evidence(url=url)
    status, detail = await asyncio.to_thread(get_health, run.options, url, evidence)
    run.rec.add("http_health", status, started, detail, evidence)


def _opener(options: Options, url: str, evidence: Evidence) -> urllib.request.OpenerDirector:
    """urllib reads http_proxy & co. by default: only with --use-env-proxy."""
    handler = _Handler(options)
    if not options.use_env_proxy:
        return urllib.request.build_opener(urllib.request.ProxyHandler({}), handler)
    parts = urlsplit(url)
    if not urllib.request.proxy_bypass(parts.netloc):
        evidence.proxy = urllib.request.getproxies().get(parts.scheme)
    return urllib.request.build_opener(urllib.request.ProxyHandler(), handler)


def get_health(options: Options, url: str, evidence: Evidence) -> tuple[Status, str]:
    """One GET, every failure recorded in ``evidence`` (the runner also re-asks after a
    drop, so this is a plain function of the options)."""
    host = urlsplit(url).hostname or ""
    port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    if options.address_for(host, port):
        evidence.connected_to = options.address_for(host, port)
    request = urllib.request.Request(url, headers=dict(options.headers))  # noqa: S310
    try:
        with _opener(options, url, evidence).open(request, timeout=options.timeout) as (
            response
        ):
            body = response.read()
            evidence.http_status = response.status
            evidence.server_header = response.headers.get("Server")
    except urllib.error.HTTPError as exc:
        evidence.http_status = exc.code
        evidence.server_header = exc.headers.get("Server")
        evidence.error = "http_status"
        try:
            text = exc.read(200).decode(errors="replace").strip()
        except Exception:
            text = ""
        evidence.error_detail = f"HTTP {exc.code} {exc.reason}" + (f": {text}" if text else "")
        return "fail", f"GET {url}: HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLError) and not evidence.proxy:
            evidence.error = "tls"
            evidence.tls_error = classify(reason)
            evidence.error_detail = explain(evidence.tls_error, reason)
            return "fail", f"GET {url}: {evidence.error_detail}"
        if evidence.proxy:  # whatever failed, it failed through the proxy
            evidence.error = "proxy"
            evidence.error_detail = f"proxy {evidence.proxy} failed: {reason}"
            return "fail", f"GET {url} via proxy {evidence.proxy}: {reason}"
        refused = isinstance(reason, ConnectionRefusedError)
        evidence.error = ("refused" if refused else
                          "dns" if isinstance(reason, socket.gaierror) else
                          "connect_timeout" if isinstance(reason, TimeoutError) else "network")
        evidence.error_detail = (f"cannot resolve host ({reason.strerror})"
                                 if evidence.error == "dns" else str(reason))
        return "fail", f"GET {url}: {'connection refused' if refused else reason}"
    except Exception as exc:  # recorded, so the run still ends with a report
        evidence.error = "client_error"
        evidence.error_detail = repr(exc)
        return "fail", f"GET {url}: unexpected error {exc!r}"
    try:
        health = _health_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        evidence.error = "unexpected_message"
        evidence.error_detail = str(exc)
        return "fail", f"GET {url}: HTTP 200 but not the service's /health body ({exc})"
    return "pass", (
        f"HTTP 200 status={health.status} connections={health.connections} "
        f"ping_interval={health.config.ping_interval:g}s"
    )


async def ask_after_drop(options: Options, url: str, dropped: list[Evidence]) -> None:
    """After a 1006, ask the same target's ``GET /health``: refused (or a proxy's 502/503/504)
    means the server process died or restarted, not that a proxy timed the connection out.

    Writes the answer into each dropped connection's evidence (``after_drop``,
    ``backend_gone``), which the diagnoses read.
    """
    for _ in range(3):  # a dying process can still accept, then reset: ask again at once
        probe = Evidence(url=url)
        await asyncio.to_thread(get_health, options, url, probe)
        if probe.error != "network":
            break
    if probe.error == "refused":
        text, gone = f"GET {url} after the drop: connection refused", True
    elif probe.http_status in (502, 503, 504):
        text, gone = f"GET {url} after the drop: HTTP {probe.http_status}", True
    elif probe.error is not None:
        text, gone = f"GET {url} after the drop: {probe.error_detail}", False
    else:
        text, gone = f"GET {url} after the drop: HTTP {probe.http_status}", False
    for ev in dropped:
        ev.after_drop = text
        ev.backend_gone = gone
