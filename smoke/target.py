"""Base URLs: what the operator typed, turned into the WebSocket and HTTP URLs to check."""

from __future__ import annotations

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
