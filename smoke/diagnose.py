"""Diagnoses: the seed's "Failure Scenarios" table, decided from the evidence of failed checks.

Rules look at the handshake's HTTP status before close codes (a proxy that drops the Upgrade
header gives 400/405/426, not 1006), then at close codes and timing, then at what a check
itself found (no heartbeat in time, mixed content, an accepted foreign Origin, ...).
"""

from __future__ import annotations

from service.codes import CloseCode
from smoke.model import CheckResult, Diagnosis, Evidence
from smoke.target import Options, Target

IMMEDIATE_S = 0.5
"""A 1006 this soon after the handshake is "immediately" in the seed's table."""
MIN_IDLE_S = 0.9
"""A connection that received a message less than about a second before a 1006 was not idle:
whatever cut it, it was not an idle timeout (0.9, not 1.0: a proxy's 1 s timer starts when
the proxy reads the last message, a little before this tool receives it)."""

NGINX_UPGRADE = (
    "proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; "
    "proxy_set_header Connection $connection_upgrade; "
    "with map $http_upgrade $connection_upgrade { default upgrade; '' close; }"
)


def _fmt(seconds: float) -> str:
    return f"{seconds:.1f}" if seconds < 10 else f"{seconds:.0f}"


class Context:
    """What the rules may know besides one check's evidence."""

    def __init__(self, target: Target, options: Options, direct: Target | None,
                 allowed_origins: list[str] | None, ping_interval: float | None) -> None:
        self.target = target
        self.options = options
        self.direct = direct
        self.allowed_origins = allowed_origins
        self.ping_interval = ping_interval

    def where(self, via: str) -> Target:
        return self.direct if via == "direct" and self.direct is not None else self.target


def _transport(result: CheckResult, ev: Evidence, ctx: Context) -> Diagnosis | None:
    """Diagnoses from the handshake and the close: evidence any check may carry."""
    t = ctx.where(result.via)
    name = result.label
    if ev.error == "proxy":
        return Diagnosis(
            code="proxy_error",
            cause=f"The proxy {ev.proxy or ''} named by http_proxy/https_proxy/all_proxy failed "
                  "(see the checks' details); the target itself was not reached",
            next_step="Check http_proxy/https_proxy/all_proxy/no_proxy, or run without "
                      "--use-env-proxy to connect directly",
            checks=[name])
    if ev.error == "client_error":
        return Diagnosis(
            code="client_error",
            cause=f"ws-smoke could not make the request to {t.hostport}: {ev.error_detail}",
            next_step="Check the URL and -H headers; if they are fine this is a bug in "
                      "ws-smoke: report it with the --json output",
            checks=[name])
    if ev.error == "refused":
        return Diagnosis(
            code="connection_refused",
            cause=f"Connection refused by {t.hostport}: nothing listens there (server not "
                  "running, or wrong host/port)",
            next_step=f"Start the service (ws-service, PORT=...) or the proxy, then check "
                      f"`curl {t.http('/health')}`",
            checks=[name])
    if ev.error == "dns":
        return Diagnosis(code="dns", cause=f"Cannot resolve {t.hostport}: {ev.error_detail}",
                         next_step="Check the host name in the URL and DNS", checks=[name])
    if ev.error == "connect_timeout":
        return Diagnosis(
            code="handshake_timeout",
            cause=f"No answer to the handshake at {t.hostport} within "
                  f"{ctx.options.timeout:g}s: a firewall dropping packets, or a proxy or "
                  "backend that accepts TCP but never answers",
            next_step="Check the proxy and backend are up and not overloaded; raise --timeout "
                      "if the path is just slow",
            checks=[name])
    if ev.error == "tls":
        return Diagnosis(code="tls", cause=f"TLS handshake with {t.hostport} failed: "
                         f"{ev.error_detail}",
                         next_step="Check the certificate and that the port serves TLS "
                                   "(wss:// to a plain port fails like this)", checks=[name])
    if result.name == "http_health":  # a plain GET: the handshake rules below do not apply
        return _http_health(ev, name)
    status = ev.http_status
    server = f" (answered by {ev.server_header})" if ev.server_header else ""
    if status == 403:
        allowed = (", ".join(ctx.allowed_origins) if ctx.allowed_origins is not None
                   else "unknown (health_status not reachable with this Origin)")
        return Diagnosis(
            code="origin_forbidden",
            cause=f"HTTP 403 Forbidden on the handshake{server}: Origin not allowed. "
                  f"Origin sent: {ev.origin or '(none)'}; allowed origins: {allowed}",
            next_step="Add the origin to ALLOWED_ORIGINS (comma list) and restart, or run "
                      "with --origin set to an allowed one; with WS_REQUIRE_ORIGIN=true a "
                      "missing Origin is refused too",
            checks=[name])
    if status == 401:
        sent = any(k.lower() == "authorization" for k, _ in ctx.options.headers)
        return Diagnosis(
            code="auth_required",
            cause=f"HTTP 401 on the handshake{server}: "
                  + ("the Authorization header sent was rejected" if sent else
                     "the server requires a bearer token (WS_AUTH_TOKEN is set)"),
            next_step="Pass -H 'Authorization: Bearer TOKEN' with the server's WS_AUTH_TOKEN",
            checks=[name])
    if status in (502, 503, 504):
        return Diagnosis(
            code="backend_unreachable",
            cause=f"HTTP {status} on the handshake{server}: the proxy is up but cannot reach "
                  "the backend",
            next_step="Check the proxy's upstream (proxy_pass host:port) and that the backend "
                      "runs and listens there (`curl http://BACKEND/health`); run with "
                      "--direct BACKEND_URL to test it without the proxy",
            checks=[name])
    plain_get = status in (400, 426) or (
        status == 405 and "websocket" in (ev.allow_header or "").lower())
    if plain_get:
        because = (" (405 with 'Allow: websocket': the backend received a plain GET)"
                   if status == 405 else "")
        return Diagnosis(
            code="upgrade_not_forwarded",
            cause=f"HTTP {status} on the handshake{server}{because}: the proxy is not "
                  "forwarding the Upgrade and Connection headers",
            next_step=f"In the proxy's location: {NGINX_UPGRADE}",
            checks=[name])
    if status == 404:
        return Diagnosis(
            code="not_found",
            cause=f"HTTP 404 for {ev.url}{server}: no such endpoint, or the proxy does not "
                  "route this path to the service",
            next_step="Check the base URL's path and the proxy's location blocks",
            checks=[name])
    if status is not None and status != 101:
        return Diagnosis(code=f"http_{status}",
                         cause=f"Handshake rejected with HTTP {status}{server}: "
                               f"{ev.error_detail}",
                         next_step="Check the proxy and server logs for this request",
                         checks=[name])
    if ev.error == "handshake":
        return Diagnosis(
            code="bad_handshake",
            cause=f"The handshake with {t.hostport} failed: {ev.error_detail}",
            next_step="Check the URL's scheme and port (a TLS port needs wss://, a plain one "
                      "ws://) and the proxy in between",
            checks=[name])
    if ev.close_code == CloseCode.ABNORMAL and ev.closed_by == "network":
        return _abnormal(ev, ctx, name)
    if ev.close_code is not None and ev.closed_by == "server" and ev.close_code != CloseCode.NORMAL:
        return Diagnosis(
            code=f"closed_{ev.close_code}",
            cause=f"The server closed the connection: {ev.summary()}",
            next_step="`grep WS_DIAGNOSTICS` in the server log for this client's close event"
                      + ("; 1001 means a restart or deploy: reconnect and retry"
                         if ev.close_code == CloseCode.GOING_AWAY else ""),
            checks=[name])
    return None


def _http_health(ev: Evidence, name: str) -> Diagnosis | None:
    """``GET /health`` answered, but not as the service does."""
    status = ev.http_status
    server = f" (answered by {ev.server_header})" if ev.server_header else ""
    if status in (502, 503, 504):
        return Diagnosis(
            code="health_backend_unreachable",
            cause=f"GET {ev.url} answered HTTP {status}{server}: the proxy is up but cannot "
                  "reach the backend",
            next_step="Check the proxy's upstream (proxy_pass host:port) and that the backend "
                      "runs and listens there; run with --direct BACKEND_URL",
            checks=[name])
    if status is not None and status != 200:
        return Diagnosis(
            code="health_http_status",
            cause=f"GET {ev.url} answered HTTP {status}{server}: {ev.error_detail}; this is a "
                  "plain HTTP request, so it says nothing about WebSocket upgrades",
            next_step="Check the proxy routes /health to the service, and the -H headers "
                      "sent (they go on this request too); see the proxy and server logs",
            checks=[name])
    if ev.error == "unexpected_message":
        return Diagnosis(
            code="health_not_service",
            cause=f"GET {ev.url} answered 200 but not with the service's /health body: "
                  f"{ev.error_detail}",
            next_step="The URL reaches something else (another app, a proxy's default "
                      "page): check the base URL and the proxy's location blocks",
            checks=[name])
    return None


def _abnormal(ev: Evidence, ctx: Context, name: str) -> Diagnosis:
    age = ev.age_at_close_s or 0.0
    idle = ev.idle_at_close_s if ev.idle_at_close_s is not None else age
    interval = ctx.ping_interval
    if ev.backend_gone:
        return Diagnosis(
            code="backend_gone",
            cause=f"Close 1006 (no close frame), and {ev.after_drop}: the "
                  "server process died or restarted (a crash, an OOM kill, a deploy) - not a "
                  "proxy timeout",
            next_step="Check the server's own log and exit status (journalctl, docker logs, "
                      "dmesg for the OOM killer) at that time, and its restart policy",
            checks=[name])
    if age < IMMEDIATE_S:
        return Diagnosis(
            code="abnormal_close_immediate",
            cause=f"Close 1006 (no close frame) {age:.2f}s after the handshake: the connection "
                  "is cut as soon as it opens - typically a proxy that is not set up for "
                  "upgraded connections, or a crash in the server",
            next_step=f"In the proxy: {NGINX_UPGRADE}; then check the proxy's error.log and "
                      "`grep WS_DIAGNOSTICS` in the server log",
            checks=[name])
    interval_text = f"{interval:g} s" if interval is not None else "unknown"
    # A connection that just received a message was not idle. Heartbeats that arrived prove
    # the path survives gaps of one interval: a drop sooner than that after the last message
    # is not an idle timeout either.
    if idle >= MIN_IDLE_S and (interval is None or ev.heartbeats_received == 0
                               or idle >= interval * 0.9):
        n = _fmt(idle)
        lower = f"{max(idle / 2, 0.1):.2g}" if idle < 10 else f"{idle / 2:.0f}"
        return Diagnosis(
            code="proxy_idle_timeout",
            cause=f"Close 1006 (no close frame) after {age:.2f}s, {idle:.2f}s after the last "
                  f"message: proxy idle timeout of about {n} s; server ping interval is "
                  f"{interval_text}",
            next_step=f"Lower WS_PING_INTERVAL below {n} s (e.g. {lower}) or raise "
                      f"proxy_read_timeout above {interval_text} (nginx default 60 s)",
            checks=[name])
    flowing = "heartbeats were" if ev.heartbeats_received else "messages were"
    return Diagnosis(
        code="dropped_while_active",
        cause=f"Close 1006 (no close frame) after {age:.2f}s although {flowing} "
              f"arriving (last message {idle:.2f}s before, ping interval {interval_text}): "
              "not an idle timeout - a connection lifetime cap (e.g. a load balancer's), a "
              "network cut, or the server process dying",
        next_step="Check the proxy/load balancer's maximum connection duration and the "
                  "server log (`grep WS_DIAGNOSTICS`) at that time",
        checks=[name])


def _finding(result: CheckResult, ctx: Context) -> Diagnosis | None:
    """Diagnoses from what a check itself measured, on a connection that still worked."""
    name = result.label
    if result.name == "tool_error":
        return Diagnosis(
            code="tool_error",
            cause=f"ws-smoke itself failed, so some results are missing (shown as skipped): "
                  f"{result.detail}",
            next_step="Rerun; if it repeats, report it as a ws-smoke bug with the --json "
                      "output. This says nothing about the target",
            checks=[name])
    if result.name == "heartbeat":
        expected = result.metrics.get("expected_interval_s", 0.0)
        server = result.metrics.get("server_interval_s", 0.0)
        grace = result.metrics.get("grace_s", ctx.options.grace)
        slower = (f"; the server's ping_interval is {server:g} s, above the expected "
                  f"{expected:g} s" if server and server > expected else "")
        return Diagnosis(
            code="no_heartbeat",
            cause=f"No heartbeat within {expected:g} s interval + {grace:g} s grace: the "
                  f"server's heartbeat is disabled or too slow{slower}",
            next_step="Set WS_PING_INTERVAL (below every proxy's idle timeout, e.g. 25 s for "
                      "nginx's 60 s) and restart the server; `grep WS_DIAGNOSTICS` shows "
                      "heartbeats_sent per connection",
            checks=[name])
    if result.name == "mixed_content":
        return Diagnosis(
            code="mixed_content",
            cause=f"Mixed content: {result.detail}; browsers block ws:// from https pages "
                  "unless the host is loopback (localhost, 127.0.0.0/8, [::1])",
            next_step="Set WS_PUBLIC_URL=wss://HOST/ws (and PUBLIC_BASE_URL=https://HOST), "
                      "with TLS terminated at the proxy",
            checks=[name])
    if result.name == "origin_policy":
        return Diagnosis(
            code="origin_not_enforced",
            cause=f"{result.detail}: the Origin check is not enforced (cross-site WebSocket "
                  "hijacking is possible)",
            next_step="Check the service's handshake guard runs, and that the proxy passes "
                      "the Origin header through unchanged",
            checks=[name])
    if result.name == "latency":
        return Diagnosis(
            code="slow_round_trips",
            cause=f"Round trips too slow: {result.detail}",
            next_step="Compare with --direct to see whether the proxy or the network adds it; "
                      "check server load",
            checks=[name])
    if result.name in ("echo_roundtrip", "ws_echo"):
        return Diagnosis(code="echo_mismatch",
                         cause=f"Echo not faithful: {result.detail}",
                         next_step="A message serialization issue: check the proxy does not "
                                   "rewrite frames and the server's echo handler",
                         checks=[name])
    if result.name in ("echo_welcome", "health_status"):
        return Diagnosis(
            code="no_greeting",
            cause=f"No greeting message: {result.detail}",
            next_step="The server is not this service or the endpoint is misconfigured: check "
                      "the URL's path and the server version",
            checks=[name])
    if result.name == "config":
        return Diagnosis(code="bad_config", cause=f"Heartbeat config not sane: {result.detail}",
                         next_step="Set WS_PING_INTERVAL and WS_PING_TIMEOUT (timeout below "
                                   "interval) and restart", checks=[name])
    return Diagnosis(code=f"failed_{result.name}", cause=f"{result.title}: {result.detail}",
                     next_step="See the check's detail", checks=[name])


def diagnose(target: Target, options: Options, results: list[CheckResult], *,
             direct: Target | None = None, allowed_origins: list[str] | None = None,
             ping_interval: float | None = None) -> list[Diagnosis]:
    """One diagnosis per distinct cause, naming every failed check it explains."""
    ctx = Context(target, options, direct, allowed_origins, ping_interval)
    merged: dict[str, Diagnosis] = {}
    for result in results:
        if result.status != "fail":
            continue
        ev = result.evidence
        diagnosis = (_transport(result, ev, ctx) if ev is not None else None) or _finding(
            result, ctx)
        if diagnosis is None:
            continue
        key = f"{result.via}:{diagnosis.code}:{diagnosis.cause}"
        if key in merged:
            merged[key].checks.extend(diagnosis.checks)
        else:
            merged[key] = diagnosis
    out = list(merged.values())
    if direct is not None:
        out.extend(_proxy_vs_direct(results, target, direct))
    return out


def _proxy_vs_direct(results: list[CheckResult], target: Target,
                     direct: Target) -> list[Diagnosis]:
    by_via = {(r.via, r.name): r for r in results}
    proxy_only: list[str] = []
    both: list[str] = []
    for r in results:
        twin = by_via.get(("direct", r.name))
        if r.via != "target" or r.status != "fail" or twin is None or r.name == "tool_error":
            continue
        if twin.status == "pass":
            proxy_only.append(r.label)
        elif twin.status == "fail":
            both.extend([r.label, twin.label])
    out: list[Diagnosis] = []
    if proxy_only:
        out.append(Diagnosis(
            code="proxy_configuration",
            cause=f"Proxy configuration problem: {', '.join(proxy_only)} fail through "
                  f"{target.ws_base} but pass direct to the backend at {direct.ws_base}",
            next_step="Fix the proxy (see the diagnoses above), not the service",
            checks=proxy_only))
    if both:
        out.append(Diagnosis(
            code="backend_problem",
            cause=f"{', '.join(both[::2])} fail both through {target.ws_base} and direct at "
                  f"{direct.ws_base}: the backend itself is at fault",
            next_step="Fix the service (or start it) before looking at the proxy",
            checks=both))
    return out
