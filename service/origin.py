"""What a browser sends as ``Origin``: the service checks it, ws-smoke names it (RFC 6454)."""

from __future__ import annotations

from urllib.parse import urlsplit


def origin_of(url: str) -> str:
    """The Origin a browser sends from a page under ``url``: scheme://host[:port], lower-case,
    without a default port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.netloc.rpartition("@")[2].lower()
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default and host.endswith(default):
        host = host[: -len(default)]
    return f"{scheme}://{host}"


def is_loopback_host(host: str) -> bool:
    """localhost (and ``*.localhost``), 127.0.0.0/8 or [::1], with or without a port."""
    name = host.lower().rstrip(".")
    if name.startswith("["):
        return name.partition("]")[0] == "[::1"
    name = name.rpartition(":")[0] if name.count(":") == 1 else name
    if name == "localhost" or name.endswith(".localhost"):
        return True
    parts = name.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() for p in parts)


def loopback_same_origin(origin: str, host_header: str | None) -> bool:
    """A page served by this very server on a loopback name: its Origin names the Host asked.

    Always safe to accept (it is the service's own page, e.g. ``/ws-check`` of a local run on
    any port); limited to loopback names so a DNS-rebinding name cannot claim it.
    """
    if not host_header or not is_loopback_host(host_header):
        return False
    return any(origin == origin_of(f"{scheme}://{host_header}") for scheme in ("http", "https"))

