"""``GET /ws-check``: the browser check page, one self-contained HTML file.

The page (``service/static/ws_check.html``, shipped in the wheel) opens ``/ws/echo``,
``/ws/health`` and ``/ws`` from the visitor's own browser, the vantage point the operator
cannot reach, and ends with a JSON report in the ``ws-check`` diagnosis vocabulary.

The service fills in what a browser cannot learn from a refused handshake (it sees only 1006):
its own public origin, the allowed origins and whether a token is required, plus the close-code
names of ``service.codes``. The page is served with a strict Content-Security-Policy: its one
inline script and style are allowed by hash, nothing else loads.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get
from litestar.handlers import HTTPRouteHandler

from service.codes import CloseCode, close_code_name
from service.origin import origin_of
from service.settings import Settings

PATH = "/ws-check"
_DATA = '<script id="ws-check-server" type="application/json">{}</script>'
_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_STYLE = re.compile(r"<style>(.*?)</style>", re.DOTALL)


class PageData(msgspec.Struct, kw_only=True):
    """What the page is told about the service that served it (all of it is already public in
    ``health_status``, except ``auth_required``, a yes/no)."""

    page_origin: str
    allowed_origins: list[str]
    any_origin: bool
    auth_required: bool
    close_codes: dict[str, str]


def template() -> str:
    """The page as shipped, before the service's data is filled in."""
    return resources.files("service").joinpath("static/ws_check.html").read_text("utf-8")


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def content_security_policy(page: str) -> str:
    """Only the page's own inline script and style run; WebSockets may go anywhere (``?url=``),
    plain requests only to the page's origin (``/health``)."""
    scripts = " ".join(_hash(body) for body in _SCRIPT.findall(page))
    styles = " ".join(_hash(body) for body in _STYLE.findall(page))
    return (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; "
        "connect-src 'self' ws: wss:; img-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


def render(settings: Settings, public_base_url: str | None = None) -> str:
    data = PageData(
        page_origin=origin_of(public_base_url or settings.public_base_url),
        allowed_origins=list(settings.allowed_origins),
        any_origin=settings.any_origin,
        auth_required=bool(settings.ws_auth_token),
        close_codes={str(int(code)): close_code_name(code) for code in CloseCode},
    )
    # "<" escaped so no value can end the data block early.
    blob = msgspec.json.encode(data).decode().replace("<", "\\u003c")
    page = template()
    assert page.count(_DATA) == 1, "ws_check.html lost its data block"
    return page.replace(_DATA, _DATA.replace("{}", blob))


def check_page_route(settings: Settings) -> HTTPRouteHandler:
    """The route; the page is rendered once per public origin (once, unless PUBLIC_BASE_URL is
    unset and the app is served on several ports)."""
    pages: dict[str, tuple[bytes, dict[str, str]]] = {}

    def page_for(public_base_url: str) -> tuple[bytes, dict[str, str]]:
        if public_base_url not in pages:
            page = render(settings, public_base_url)
            pages[public_base_url] = page.encode(), {
                "Content-Security-Policy": content_security_policy(page),
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            }
        return pages[public_base_url]

    page_for(settings.public_base_url)

    @get(PATH, sync_to_thread=False, name="ws-check")
    def ws_check(request: Request[Any, Any, Any]) -> Response[bytes]:
        body, headers = page_for(settings.public_base_url_for(request.scope.get("server")))
        return Response(body, media_type=MediaType.HTML, headers=headers)

    return ws_check
