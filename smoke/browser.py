"""How browsers judge a ``ws://`` URL on an ``https`` page: the mixed-content rule."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from smoke.model import Status

_IPV4_PART = {16: re.compile(r"[0-9a-fA-F]*"), 8: re.compile(r"[0-7]*"), 10: re.compile(r"[0-9]+")}


def _whatwg_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``host`` read as the WHATWG URL parser reads an IPv4 host (``127.1``, ``0x7f.0.0.1``,
    ``2130706433`` all mean 127.0.0.1 to a browser); None when it is not one."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if len(parts) > 4:
        return None
    numbers: list[int] = []
    for part in parts:
        digits, base = part, 10
        if part[:2] in ("0x", "0X"):
            digits, base = part[2:], 16
        elif len(part) > 1 and part.startswith("0"):
            digits, base = part[1:], 8
        if not part or not _IPV4_PART[base].fullmatch(digits):
            return None
        numbers.append(int(digits, base) if digits else 0)
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        return None
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def loopback_host(url: str) -> str | None:
    """The host of ``url`` when browsers count it as loopback, else None.

    Loopback is a potentially trustworthy origin (W3C Secure Contexts, "Is origin potentially
    trustworthy?", which the Mixed Content spec defers to): ``localhost`` and ``*.localhost``
    (a trailing dot allowed), 127.0.0.0/8 in any IPv4 form a browser's URL parser accepts, and
    ``[::1]``. Not ``0.0.0.0`` nor ``[::ffff:127.0.0.1]``: Chromium 156 lets an https page
    open those but warns that it is mixed content ("Insecure access is deprecated").
    """
    host = (urlsplit(url).hostname or "").lower()
    name = host[:-1] if host.endswith(".") else host
    if name == "localhost" or name.endswith(".localhost"):
        return host
    if ":" in host:
        try:
            return host if ipaddress.IPv6Address(host) == ipaddress.IPv6Address("::1") else None
        except ValueError:
            return None
    ipv4 = _whatwg_ipv4(host) if host else None
    return host if ipv4 is not None and ipv4.is_loopback else None


def mixed_content(ws_url: str, page_url: str, page: str) -> tuple[Status, str] | None:
    """Would a browser showing ``page_url`` refuse to open ``ws_url``? As browsers judge it:
    ws:// from an https page is blocked unless its host is loopback (see ``loopback_host``).
    None when there is nothing to judge (the page is not https, or the URL is wss://);
    ``page`` names the page in the detail."""
    if not page_url.startswith(("https://", "wss://")) or not ws_url.startswith("ws://"):
        return None
    clash = f"ws_public_url={ws_url} is ws:// while {page} is https"
    host = loopback_host(ws_url)
    if host is None:
        return "fail", clash
    return "pass", (f"{clash}, but {host} is loopback: browsers treat loopback as potentially "
                    "trustworthy (W3C Secure Contexts), so an https page may open it")
