"""``GET /ws-check`` as served (headers, CSP, accessibility markers, the service's data) and the
origin rule it needs: the service's own public origin is accepted without being listed.

The page's behaviour in a real browser: ``tests/test_browser.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re

import pytest
from litestar.testing import TestClient
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from service.app import create_app
from service.check_page import PATH, template
from service.codes import CloseCode, close_code_name
from service.origin import origin_of
from service.settings import load_settings
from testkit.service import StartService


@pytest.mark.parametrize(("url", "origin"), [
    ("http://localhost:9000", "http://localhost:9000"),
    ("https://App.Example.COM/", "https://app.example.com"),
    ("https://app.example.com:443/base/path", "https://app.example.com"),
    ("http://app.example.com:80", "http://app.example.com"),
    ("https://app.example.com:8443", "https://app.example.com:8443"),
    ("http://user:secret@[::1]:9000/x", "http://[::1]:9000"),
])
def test_origin_of_is_what_a_browser_sends(url: str, origin: str) -> None:
    assert origin_of(url) == origin


def _page(**env: str) -> tuple[str, dict[str, str]]:
    with TestClient(create_app(load_settings(env))) as client:
        response = client.get(PATH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    return response.text, dict(response.headers)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_page_is_self_contained_and_its_csp_allows_exactly_its_inline_code() -> None:
    page, headers = _page()
    csp = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    scripts = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    styles = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    assert len(scripts) == 1
    assert len(styles) == 1
    assert csp["script-src"] == _sha256(scripts[0])
    assert csp["style-src"] == _sha256(styles[0])
    assert csp["default-src"] == "'none'"
    assert csp["connect-src"] == "'self' ws: wss:"
    assert headers["x-content-type-options"] == "nosniff"
    # No external asset: no src/href to anything but the page's own anchors, no @import/url().
    assert not re.search(r"\s(src|href)=\"(?!#)", page), "an external reference"
    assert "url(" not in styles[0]
    assert "@import" not in styles[0]
    # What the tests and the ticket rely on, and the accessibility landmarks.
    assert '<pre id="ws-check-report"' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert '<html lang="en">' in page
    assert 'role="log" aria-live="polite"' in page
    for landmark in ("<header>", '<main id="main">', "<footer"):
        assert landmark in page
    for field in ("url", "sustain"):
        assert f'<label for="{field}">' in page
        assert f'id="{field}"' in page


def test_page_carries_what_the_service_knows_and_a_browser_cannot_see() -> None:
    page, _ = _page(PUBLIC_BASE_URL="https://App.Example.com:443/", WS_AUTH_TOKEN="s3cret",
                    ALLOWED_ORIGINS="https://a.example,https://b.example")
    blob = re.search(r'<script id="ws-check-server" type="application/json">(.*?)</script>',
                     page, re.DOTALL)
    assert blob is not None
    data = json.loads(blob.group(1))
    assert data["page_origin"] == "https://app.example.com"
    assert data["allowed_origins"] == ["https://a.example", "https://b.example"]
    assert data["any_origin"] is False
    assert data["auth_required"] is True
    assert "s3cret" not in page
    assert data["close_codes"] == {str(int(c)): close_code_name(c) for c in CloseCode}
    assert '<script id="ws-check-server" type="application/json">{}</script>' in template()


def test_data_cannot_end_the_data_block() -> None:
    # An origin cannot hold "<", but the escaping must not depend on it.
    page, _ = _page(PUBLIC_BASE_URL="https://x.example/</script><script>alert(1)</script>")
    assert page.count("</script>") == 2  # the data block's and the page script's


async def _status(url: str, origin: str | None, host: str | None = None) -> int:
    headers = {"Host": host} if host else None
    try:
        async with connect(url, origin=origin, proxy=None, open_timeout=5,  # type: ignore[arg-type]
                           additional_headers=headers):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_own_public_origin_is_accepted_without_being_listed(start_service: StartService) -> None:
    """PUBLIC_BASE_URL's origin (as a browser spells it) passes; nothing else changes."""
    service = start_service(PUBLIC_BASE_URL="https://App.Example.com:443/app")
    url = f"{service.ws}/ws/echo"
    cases = {
        "https://app.example.com": 101,  # the page's own origin
        "http://localhost:3000": 101,  # ALLOWED_ORIGINS' defaults still pass
        "http://app.example.com": 403,  # another scheme
        "https://app.example.com:8443": 403,  # another port
        "https://evil.app.example.com": 403,
        f"http://localhost:{service.port}": 403,  # the default base URL no longer applies
    }
    for origin, status in cases.items():
        assert asyncio.run(_status(url, origin)) == status, origin
    assert asyncio.run(_status(url, None)) == 101  # no Origin (wscat) as before


def test_default_public_origin_is_the_services_own_port(start_service: StartService) -> None:
    """Unset PUBLIC_BASE_URL names the served port; a loopback page of this very server (its
    Origin is the Host it asked) is accepted too, and nothing that only claims to be."""
    service = start_service()
    url = f"{service.ws}/ws"
    own = f"127.0.0.1:{service.port}"
    cases: dict[tuple[str, str | None], int] = {
        (f"http://localhost:{service.port}", None): 101,
        (f"http://{own}", None): 101,  # the page opened as http://127.0.0.1:PORT/ws-check
        (f"http://localhost:{service.port}", f"localhost:{service.port}"): 101,
        ("http://localhost:1", None): 403,  # another port of this machine
        (f"http://127.0.0.2:{service.port}", None): 403,  # another loopback address
        # DNS rebinding: a foreign name resolved to 127.0.0.1 is not a loopback name
        (f"http://evil.example:{service.port}", f"evil.example:{service.port}"): 403,
    }
    for (origin, host), status in cases.items():
        assert asyncio.run(_status(url, origin, host)) == status, (origin, host)


def _luminance(color: str) -> float:
    channels = [int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_every_text_colour_has_at_least_4_5_to_1_contrast() -> None:
    """WCAG AA for normal text, on both backgrounds the page uses (and white on buttons)."""
    colours = dict(re.findall(r"--([a-z]+): (#[0-9a-f]{6});", template()))
    assert {"text", "muted", "pass", "fail", "skip", "accent", "bg", "panel"} <= set(colours)
    for name in ("text", "muted", "pass", "fail", "skip", "accent"):
        for background in ("bg", "panel"):
            ratio = _contrast(colours[name], colours[background])
            assert ratio >= 4.5, f"{name} on {background}: {ratio:.2f}"
    assert _contrast("#ffffff", colours["accent"]) >= 4.5  # button text
