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


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise UsageError(f"bad header {text!r}: expected 'Name: value'")
    return name.strip(), value.strip()
