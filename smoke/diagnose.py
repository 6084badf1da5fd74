"""Diagnoses: the seed's "Failure Scenarios" table, as a declared table of rules.

``RULES`` is read top to bottom and the first rule that matches a failed check gives its
diagnosis. Transport rules come first (proxy, DNS, TLS, the handshake's HTTP status before any
close code: a proxy that drops the Upgrade header gives 400/405/426, not 1006), then close
codes and timing, then what a check itself found (no heartbeat in time, mixed content, an
accepted foreign Origin, ...). Every code is a ``DiagnosisCode`` and is listed in
docs/smoke.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.codes import CloseCode
from smoke.model import CheckName, CheckResult, Diagnosis, DiagnosisCode, Evidence
from smoke.target import Options, Target

IMMEDIATE_S = 0.5
"""A 1006 this soon after the handshake is "immediately" in the seed's table."""
MIN_IDLE_S = 0.9
"""A connection that received a message less than about a second before a 1006 was not idle:
whatever cut it, it was not an idle timeout (0.9, not 1.0: a proxy's 1 s timer starts when
the proxy reads the last message, a little before this tool receives it)."""
PLAIN_TO_TLS = "plain HTTP request was sent to HTTPS port"
"""nginx's 400 page for a plain request on a TLS port: ws:// (or http://) to a wss:// site."""

NGINX_UPGRADE = (
    "proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; "
    "proxy_set_header Connection $connection_upgrade; "
    "with map $http_upgrade $connection_upgrade { default upgrade; '' ''; }"
)
"""The empty value for plain requests (not ``close``) keeps upstream keep-alive possible, as the
nginx role's template does."""


def _fmt(seconds: float) -> str:
    return f"{seconds:.1f}" if seconds < 10 else f"{seconds:.0f}"


@dataclass(frozen=True)
class Context:
    """What the rules may know besides one check's evidence."""

    target: Target
    options: Options
    direct: Target | None
    allowed_origins: list[str] | None
    ping_interval: float | None


@dataclass(frozen=True)
class Fact:
    """One failed check, its evidence (empty when it had none) and the run's context."""

    result: CheckResult
    ev: Evidence
    has_evidence: bool
    ctx: Context

    @property
    def check(self) -> CheckName:
        return self.result.name

    @property
    def where(self) -> Target:
        direct = self.ctx.direct
        return direct if self.result.via == "direct" and direct is not None else self.ctx.target

    @property
    def server(self) -> str:
        return f" (answered by {self.ev.server_header})" if self.ev.server_header else ""

    @property
    def status(self) -> int | None:
        return self.ev.http_status if self.has_evidence else None

    @property
    def handshake_status(self) -> int | None:
        """The handshake's rejection status (not /health's, which is no upgrade)."""
        s = self.status
        return s if s is not None and s != 101 and self.check != "http_health" else None

    @property
    def age(self) -> float:
        return self.ev.age_at_close_s or 0.0

    @property
    def idle(self) -> float:
        return self.ev.idle_at_close_s if self.ev.idle_at_close_s is not None else self.age

    @property
    def dropped(self) -> bool:
        """A 1006: the connection ended without a close frame."""
        return self.ev.close_code == CloseCode.ABNORMAL_CLOSURE and self.ev.closed_by == "network"

    @property
    def interval_text(self) -> str:
        i = self.ctx.ping_interval
        return f"{i:g} s" if i is not None else "unknown"

    @property
    def idle_timeout(self) -> bool:
        """The drop came after a real idle period: a connection that just received a message
        was not idle, and heartbeats that arrived prove the path survives one interval."""
        interval = self.ctx.ping_interval
        return self.idle >= MIN_IDLE_S and (interval is None or self.ev.heartbeats_received == 0
                                            or self.idle >= interval * 0.9)


Text = Callable[[Fact], str]


@dataclass(frozen=True)
class Rule:
    code: DiagnosisCode
    when: Callable[[Fact], bool]
    cause: Text
    next_step: Text


def _ev(kind: str) -> Callable[[Fact], bool]:
    return lambda f: f.has_evidence and f.ev.error == kind


def _tls(kind: str) -> Callable[[Fact], bool]:
    return lambda f: f.has_evidence and f.ev.error == "tls" and f.ev.tls_error == kind


def _check(*names: CheckName) -> Callable[[Fact], bool]:
    return lambda f: f.check in names


def _always(_: Fact) -> bool:
    return True


def _next(text: str) -> Text:
    return lambda _: text


def _cacert_step(f: Fact) -> str:
    return ("Pass the CA that signed it with --cacert FILE (a private or test CA), or "
            "install it in the system's trust store; with nginx, ssl_certificate must hold "
            "the full chain (leaf then intermediates)")


RULES: tuple[Rule, ...] = (
    # -- transport: any connection attempt -----------------------------------------------------
    Rule("proxy_error", _ev("proxy"),
         lambda f: f"The proxy {f.ev.proxy or ''} named by http_proxy/https_proxy/all_proxy "
                   "failed (see the checks' details); the target itself was not reached",
         _next("Check http_proxy/https_proxy/all_proxy/no_proxy, or run without "
               "--use-env-proxy to connect directly")),
    Rule("client_error", _ev("client_error"),
         lambda f: f"ws-smoke could not make the request to {f.where.hostport}: "
                   f"{f.ev.error_detail}",
         _next("Check the URL and -H headers; if they are fine this is a bug in ws-smoke: "
               "report it with the --json output")),
    Rule("connection_refused", _ev("refused"),
         lambda f: f"Connection refused by {f.ev.connected_to or f.where.hostport}: nothing "
                   "listens there (server not running, or wrong host/port)",
         lambda f: f"Start the service (ws-service, PORT=...) or the proxy, then check "
                   f"`curl {f.where.http('/health')}`"),
    Rule("dns", _ev("dns"),
         lambda f: f"Cannot resolve {f.where.hostport}: {f.ev.error_detail}",
         _next("Check the host name in the URL and DNS; --resolve HOST:PORT:ADDRESS checks "
               "a host before DNS points to it")),
    Rule("handshake_timeout", _ev("connect_timeout"),
         lambda f: f"No answer to the handshake at {f.where.hostport} within "
                   f"{f.ctx.options.timeout:g}s: a firewall dropping packets, or a proxy or "
                   "backend that accepts TCP but never answers",
         _next("Check the proxy and backend are up and not overloaded; raise --timeout if "
               "the path is just slow")),
    Rule("tls_expired", _tls("expired"),
         lambda f: f"The certificate of {f.where.hostport} has expired: {f.ev.error_detail}",
         _next("Renew the certificate (and reload nginx); `ws-smoke` warns --cert-warn-days "
               "(default 14) before expiry")),
    Rule("tls_name_mismatch", _tls("name_mismatch"),
         lambda f: f"The certificate of {f.where.hostport} is not valid for "
                   f"{f.where.host}: {f.ev.error_detail}",
         _next("Issue the certificate for this name (subjectAltName), or check the URL's host; "
               "with several sites on one address, check SNI selects the right server block")),
    Rule("tls_unknown_ca", _tls("unknown_ca"),
         lambda f: f"The certificate of {f.where.hostport} is signed by a CA this client does "
                   f"not trust: {f.ev.error_detail}",
         _cacert_step),
    Rule("tls_not_tls_port", _tls("not_tls"),
         lambda f: f"{f.where.hostport} does not speak TLS: wss:// (or https://) to a plain "
                   f"port ({f.ev.error_detail})",
         _next("Use ws:// for this port, or the proxy's TLS port (usually 443) for wss://")),
    Rule("tls", _ev("tls"),
         lambda f: f"TLS handshake with {f.where.hostport} failed: {f.ev.error_detail}",
         _next("Check the certificate and the proxy's ssl_protocols/ssl_ciphers; "
               "`openssl s_client -connect HOST:PORT -servername HOST` shows the server's side")),
    Rule("plain_to_tls_port",
         lambda f: f.status == 400 and PLAIN_TO_TLS in (f.ev.error_detail or ""),
         lambda f: f"HTTP 400 from {f.where.hostport}{f.server}: {PLAIN_TO_TLS} - ws:// (or "
                   "http://) to a port that serves TLS",
         _next("Use wss:// (https://) for this port")),
    # -- GET /health: a plain request, so the upgrade rules below do not apply ---------------
    Rule("health_backend_unreachable",
         lambda f: f.check == "http_health" and f.status in (502, 503, 504),
         lambda f: f"GET {f.ev.url} answered HTTP {f.status}{f.server}: the proxy is up but "
                   "cannot reach the backend",
         _next("Check the proxy's upstream (proxy_pass host:port) and that the backend runs "
               "and listens there; run with --direct BACKEND_URL")),
    Rule("health_http_status",
         lambda f: f.check == "http_health" and f.status not in (None, 200),
         lambda f: f"GET {f.ev.url} answered HTTP {f.status}{f.server}: {f.ev.error_detail}; "
                   "this is a plain HTTP request, so it says nothing about WebSocket upgrades",
         _next("Check the proxy routes /health to the service, and the -H headers sent "
               "(they go on this request too); see the proxy and server logs")),
    Rule("health_not_service",
         lambda f: f.check == "http_health" and f.ev.error == "unexpected_message",
         lambda f: f"GET {f.ev.url} answered 200 but not with the service's /health body: "
                   f"{f.ev.error_detail}",
         _next("The URL reaches something else (another app, a proxy's default page): check "
               "the base URL and the proxy's location blocks")),
    # -- the handshake's HTTP status -------------------------------------------------------
    Rule("origin_forbidden", lambda f: f.handshake_status == 403,
         lambda f: f"HTTP 403 Forbidden on the handshake{f.server}: Origin not allowed. "
                   f"Origin sent: {f.ev.origin or '(none)'}; allowed origins: "
                   + (", ".join(f.ctx.allowed_origins) if f.ctx.allowed_origins is not None
                      else "unknown (health_status not reachable with this Origin)"),
         _next("Add the origin to ALLOWED_ORIGINS (comma list) and restart, or run with "
               "--origin set to an allowed one; with WS_REQUIRE_ORIGIN=true a missing Origin "
               "is refused too")),
    Rule("auth_required", lambda f: f.handshake_status == 401,
         lambda f: f"HTTP 401 on the handshake{f.server}: "
                   + ("the Authorization header sent was rejected"
                      if any(k.lower() == "authorization" for k, _ in f.ctx.options.headers)
                      else "the server requires a bearer token (WS_AUTH_TOKEN is set)"),
         _next("Pass -H 'Authorization: Bearer TOKEN' with the server's WS_AUTH_TOKEN")),
    Rule("rate_limited", lambda f: f.handshake_status == 429,
         lambda f: f"HTTP 429 on the handshake{f.server}: this address opened too many "
                   "connections or handshakes (the nginx role's per-address limits)",
         _next("Wait and retry; if real clients share an address (NAT), raise "
               "nginx_limit_conn_per_address / nginx_limit_req_rate in the nginx role")),
    Rule("backend_unreachable", lambda f: f.handshake_status in (502, 503, 504),
         lambda f: f"HTTP {f.status} on the handshake{f.server}: the proxy is up but cannot "
                   "reach the backend" + (" (or every backend is draining: 503)"
                                          if f.status == 503 else ""),
         _next("Check the proxy's upstream (proxy_pass host:port) and that the backend runs "
               "and listens there (`curl http://BACKEND/health`); run with --direct "
               "BACKEND_URL to test it without the proxy")),
    Rule("upgrade_not_forwarded",
         lambda f: f.handshake_status in (400, 426) or (
             f.handshake_status == 405 and "websocket" in (f.ev.allow_header or "").lower()),
         lambda f: f"HTTP {f.status} on the handshake{f.server}"
                   + (" (405 with 'Allow: websocket': the backend received a plain GET)"
                      if f.status == 405 else "")
                   + ": the proxy is not forwarding the Upgrade and Connection headers",
         lambda f: f"In the proxy's location: {NGINX_UPGRADE}"),
    Rule("not_found", lambda f: f.handshake_status == 404,
         lambda f: f"HTTP 404 for {f.ev.url}{f.server}: no such endpoint, or the proxy does "
                   "not route this path to the service",
         _next("Check the base URL's path and the proxy's location blocks")),
    Rule("handshake_rejected", lambda f: f.handshake_status is not None,
         lambda f: f"Handshake rejected with HTTP {f.status}{f.server}: {f.ev.error_detail}",
         _next("Check the proxy and server logs for this request")),
    Rule("bad_handshake", _ev("handshake"),
         lambda f: f"The handshake with {f.where.hostport} failed: {f.ev.error_detail}",
         _next("Check the URL's scheme and port (a TLS port needs wss://, a plain one ws://) "
               "and the proxy in between")),
    # -- 1006: how the connection ended, and when --------------------------------------------
    Rule("backend_gone", lambda f: f.dropped and f.ev.backend_gone,
         lambda f: f"Close 1006 (no close frame), and {f.ev.after_drop}: the server process "
                   "died or restarted (a crash, an OOM kill, a deploy) - not a proxy timeout",
         _next("Check the server's own log and exit status (journalctl, docker logs, dmesg "
               "for the OOM killer) at that time, and its restart policy")),
    Rule("abnormal_close_immediate", lambda f: f.dropped and f.age < IMMEDIATE_S,
         lambda f: f"Close 1006 (no close frame) {f.age:.2f}s after the handshake: the "
                   "connection is cut as soon as it opens - typically a proxy that is not set "
                   "up for upgraded connections, or a crash in the server",
         lambda f: f"In the proxy: {NGINX_UPGRADE}; then check the proxy's error.log and "
                   "`grep WS_DIAGNOSTICS` in the server log"),
    Rule("proxy_idle_timeout", lambda f: f.dropped and f.idle_timeout,
         lambda f: f"Close 1006 (no close frame) after {f.age:.2f}s, {f.idle:.2f}s after the "
                   f"last message: proxy idle timeout of about {_fmt(f.idle)} s; server ping "
                   f"interval is {f.interval_text}",
         lambda f: f"Lower WS_PING_INTERVAL below {_fmt(f.idle)} s (e.g. "
                   + (f"{max(f.idle / 2, 0.1):.2g}" if f.idle < 10 else f"{f.idle / 2:.0f}")
                   + f") or raise proxy_read_timeout above {f.interval_text} (nginx default "
                   "60 s)"),
    Rule("dropped_while_active", lambda f: f.dropped,
         lambda f: f"Close 1006 (no close frame) after {f.age:.2f}s although "
                   + ("heartbeats were" if f.ev.heartbeats_received else "messages were")
                   + f" arriving (last message {f.idle:.2f}s before, ping interval "
                   f"{f.interval_text}): not an idle timeout - a connection lifetime cap "
                   "(e.g. a load balancer's), a network cut, or the server process dying",
         _next("Check the proxy/load balancer's maximum connection duration and the server "
               "log (`grep WS_DIAGNOSTICS`) at that time")),
    Rule("server_closed",
         lambda f: (f.ev.close_code is not None and f.ev.closed_by == "server"
                    and f.ev.close_code != CloseCode.NORMAL_CLOSURE),
         lambda f: f"The server closed the connection: {f.ev.summary()}",
         lambda f: "`grep WS_DIAGNOSTICS` in the server log for this client's close event"
                   + ("; 1001 means a restart or deploy: reconnect and retry"
                      if f.ev.close_code == CloseCode.GOING_AWAY else "")),
    # -- findings: what a check measured on a connection that worked ------------------------
    Rule("tool_error", _check("tool_error"),
         lambda f: "ws-smoke itself failed, so some results are missing (shown as skipped): "
                   f"{f.result.detail}",
         _next("Rerun; if it repeats, report it as a ws-smoke bug with the --json output. "
               "This says nothing about the target")),
    Rule("no_heartbeat", _check("heartbeat"),
         lambda f: (f"No heartbeat within {f.result.metrics.get('expected_interval_s', 0.0):g} "
                    f"s interval + {f.result.metrics.get('grace_s', f.ctx.options.grace):g} s "
                    "grace: the server's heartbeat is disabled or too slow"
                    + _slower(f.result.metrics)),
         _next("Set WS_PING_INTERVAL (below every proxy's idle timeout, e.g. 25 s for nginx's "
               "60 s) and restart the server; `grep WS_DIAGNOSTICS` shows heartbeats_sent per "
               "connection")),
    Rule("mixed_content", _check("mixed_content"),
         lambda f: f"Mixed content: {f.result.detail}; browsers block ws:// from https pages "
                   "unless the host is loopback (localhost, 127.0.0.0/8, [::1])",
         _next("Set WS_PUBLIC_URL=wss://HOST/ws (and PUBLIC_BASE_URL=https://HOST), with TLS "
               "terminated at the proxy")),
    Rule("origin_not_enforced", _check("origin_policy"),
         lambda f: f"{f.result.detail}: the Origin check is not enforced (cross-site WebSocket "
                   "hijacking is possible)",
         _next("Check the service's handshake guard runs, and that the proxy passes the Origin "
               "header through unchanged")),
    Rule("slow_round_trips", _check("latency"),
         lambda f: f"Round trips too slow: {f.result.detail}",
         _next("Compare with --direct to see whether the proxy or the network adds it; check "
               "server load")),
    Rule("echo_mismatch", _check("echo_roundtrip", "ws_echo"),
         lambda f: f"Echo not faithful: {f.result.detail}",
         _next("A message serialization issue: check the proxy does not rewrite frames and the "
               "server's echo handler")),
    Rule("no_greeting", _check("echo_welcome", "health_status"),
         lambda f: f"No greeting message: {f.result.detail}",
         _next("The server is not this service or the endpoint is misconfigured: check the "
               "URL's path and the server version")),
    Rule("bad_config", _check("config"),
         lambda f: f"Heartbeat config not sane: {f.result.detail}",
         _next("Set WS_PING_INTERVAL and WS_PING_TIMEOUT (timeout below interval) and "
               "restart")),
    Rule("check_failed", _always,
         lambda f: f"{f.result.title}: {f.result.detail}",
         _next("See the check's detail")),
)
"""First match wins; ``check_failed`` is the catch-all, so every failed check is explained."""


def _slower(metrics: dict[str, float]) -> str:
    expected = metrics.get("expected_interval_s", 0.0)
    server = metrics.get("server_interval_s", 0.0)
    return (f"; the server's ping_interval is {server:g} s, above the expected {expected:g} s"
            if server and server > expected else "")


def explain(result: CheckResult, ctx: Context) -> Diagnosis:
    """The first rule matching one failed check."""
    ev = result.evidence
    fact = Fact(result, ev if ev is not None else Evidence(url=""), ev is not None, ctx)
    rule = next(r for r in RULES if r.when(fact))
    return Diagnosis(code=rule.code, cause=rule.cause(fact), next_step=rule.next_step(fact),
                     checks=[result.label])


def diagnose(target: Target, options: Options, results: list[CheckResult], *,
             direct: Target | None = None, allowed_origins: list[str] | None = None,
             ping_interval: float | None = None) -> list[Diagnosis]:
    """One diagnosis per distinct cause, naming every failed check it explains."""
    ctx = Context(target, options, direct, allowed_origins, ping_interval)
    merged: dict[str, Diagnosis] = {}
    for result in results:
        if result.status != "fail":
            continue
        diagnosis = explain(result, ctx)
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
