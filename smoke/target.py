"""Base URLs: what the operator typed, turned into the WebSocket and HTTP URLs to check."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

DEFAULT_URL = "ws://localhost:9000"
ENDPOINTS = ("/ws/echo", "/ws/health", "/ws")
_WS_SCHEME = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


class UsageError(ValueError):
    """A bad command line: exit status 2."""


@dataclass(frozen=True)
class Target:
    """One deployment to check: ``ws_base`` + endpoint path, ``http_base`` + ``/health``."""

    given: str
    ws_base: str
    http_base: str

    @property
    def secure(self) -> bool:
        return self.ws_base.startswith("wss://")

    @property
    def host(self) -> str:
        return urlsplit(self.ws_base).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.ws_base).port or (443 if self.secure else 80)

    @property
    def hostport(self) -> str:
        return urlsplit(self.ws_base).netloc

    def ws(self, path: str) -> str:
        return self.ws_base + path

    def http(self, path: str) -> str:
        return self.http_base + path


def parse_target(url: str) -> Target:
    """Accept ws://, wss://, http://, https:// (or a bare host:port, taken as ws://).

    A path that ends in one of the service's endpoints (``ws://host/ws``, the service's
    WS_PUBLIC_URL) is trimmed to the base, so any URL the operator has at hand works.
    """
    text = url.strip()
    if "://" not in text:
        text = "ws://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _WS_SCHEME:
        raise UsageError(f"unsupported URL scheme {parts.scheme!r} in {url!r}: "
                         "use ws://, wss://, http:// or https://")
    if not parts.hostname:
        raise UsageError(f"no host in URL {url!r}")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise UsageError(f"bad port in URL {url!r}: {exc}") from None
    path = parts.path.rstrip("/")
    for endpoint in sorted(ENDPOINTS, key=len, reverse=True):
        if path.endswith(endpoint):
            path = path[: -len(endpoint)]
            break
    ws_scheme = _WS_SCHEME[scheme]
    http_scheme = "https" if ws_scheme == "wss" else "http"
    return Target(
        given=url,
        ws_base=urlunsplit((ws_scheme, parts.netloc, path, "", "")),
        http_base=urlunsplit((http_scheme, parts.netloc, path, "", "")),
    )


@dataclass(frozen=True)
class Options:
    """Everything a run needs besides the target."""

    origin: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0
    sustain: float = 75.0
    quick: bool = False
    grace: float = 5.0
    heartbeat_interval: float | None = None
    latency_samples: int = 20
    latency_limit_ms: float = 100.0
    foreign_origin: str = "https://smoke-check.invalid"
    use_env_proxy: bool = False
    """Honour http_proxy/https_proxy/all_proxy (and no_proxy); by default no proxy is used."""
    cacert: str | None = None
    """PEM file of the CA(s) to trust instead of the system's (curl's ``--cacert``)."""
    insecure: bool = False
    """Do not verify certificates (curl's ``-k``): reported loudly, never silently."""
    resolve: tuple[tuple[str, int, str], ...] = ()
    """``(host, port, address)``: connect there, but keep ``host`` for SNI, Host and the
    certificate check (curl's ``--resolve``)."""
    cert_warn_days: float = 14.0

    def address_for(self, host: str, port: int) -> str | None:
        """The address ``--resolve`` chose for ``host:port``, if any."""
        host = host.lower().strip("[]")
        return next((a for h, p, a in self.resolve if h == host and p == port), None)


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'``; a name that is not an RFC 9110 token, or a value with control
    characters (CR, LF, NUL, \\x01, DEL, ...), is a usage error rather than a request the
    server rejects with a 400 that would look like a deployment problem."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise UsageError(f"bad header {text!r}: expected 'Name: value'")
    if not set(name) <= _TOKEN_CHARS:
        raise UsageError(f"bad header name {name!r}: only letters, digits and !#$%&'*+-.^_`|~")
    bad = sorted({c for c in value if (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise UsageError(f"bad header value for {name}: control character(s) {shown}")
    return name, value


def parse_resolve(text: str) -> tuple[str, int, str]:
    """``HOST:PORT:ADDRESS`` as curl's ``--resolve`` takes it (an IPv6 address may be
    bracketed); the address must be an IP address, since choosing it is the point."""
    host, sep, rest = text.partition(":")
    port_text, sep2, address = rest.partition(":")
    if not (sep and sep2 and host and address):
        raise UsageError(f"bad --resolve {text!r}: expected HOST:PORT:ADDRESS")
    try:
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise UsageError(f"bad --resolve {text!r}: port {port_text!r} is not 1-65535") from None
    address = address.strip("[]")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise UsageError(f"bad --resolve {text!r}: {address!r} is not an IP address") from None
    return host.lower(), port, address
