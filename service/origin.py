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
