"""A real headless Chromium for the tests, on 127.0.0.1 only.

``PageServer`` serves one small page (over http, or https with a throwaway self-signed
certificate) that opens WebSockets one after the other and writes what JavaScript saw into the
DOM; ``run_chromium`` loads it with ``--dump-dom`` and returns the parsed results plus the
browser's console.

Waiting is event-driven, never a sleep: the page holds an ``<img src="/hold">`` whose response
the server sends only once the page has fetched ``/done`` (after writing its results), so the
page's load event - and with it the dump - comes after the last WebSocket closed.
``--virtual-time-budget`` is the backstop after load; a page that never finishes is released
after ``HOLD_TIMEOUT`` and the test fails with the dumped DOM and console.
"""

from __future__ import annotations

import datetime
import html
import ipaddress
import json
import re
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOLD_TIMEOUT = 20.0
PAYLOAD_TYPE = "browser_check"

# Chromium may resolve loopback names only: every other name (its own background services
# included) fails at once, so nothing but 127.0.0.1 is ever contacted.
RESOLVER_RULES = "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE *.localhost, EXCLUDE 127.0.0.1"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ws browser check</title></head>
<body>
<script id="config" type="application/json">{config}</script>
<script>
"use strict";
const config = JSON.parse(document.getElementById("config").textContent);

function attempt(url) {{
  return new Promise((resolve) => {{
    const started = performance.now();
    const r = {{url: url, events: [], messages: []}};
    const ms = () => Math.round(performance.now() - started);
    let ws;
    try {{
      ws = new WebSocket(url);
    }} catch (e) {{
      r.thrown = e.name + ": " + e.message;
      r.thrown_after_ms = ms();
      resolve(r);
      return;
    }}
    ws.onopen = () => r.events.push("open");
    ws.onerror = () => {{ r.events.push("error"); r.error_after_ms = ms(); }};
    ws.onmessage = (ev) => {{
      let m;
      try {{ m = JSON.parse(ev.data); }} catch (e) {{ m = {{unparsed: String(ev.data)}}; }}
      r.messages.push(m);
      if (m.type === "welcome") ws.send(JSON.stringify(config.payload));
      else if (m.type === "echo") ws.close(1000, "done");
    }};
    ws.onclose = (ev) => {{
      r.close = {{code: ev.code, clean: ev.wasClean, reason: ev.reason}};
      resolve(r);
    }};
  }});
}}

(async () => {{
  const results = [];
  try {{
    for (const url of config.urls) results.push(await attempt(url));
  }} catch (e) {{
    results.push({{page_error: String(e)}});
  }}
  const pre = document.createElement("pre");
  pre.id = "results";
  pre.textContent = JSON.stringify(results);
  document.body.appendChild(pre);
  const done = document.createElement("p");
  done.id = "done";
  done.textContent = "done";
  document.body.appendChild(done);
  await fetch("/done");
}})();
</script>
<img src="/hold" alt="">
</body></html>
"""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    page = b""
    tls: ssl.SSLContext | None = None
    finished: threading.Event

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the request's own thread, not in the accept loop.
        if self.tls is not None:
            request = self.tls.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-request (Chromium exiting) is not a test failure."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        status, body, kind = 200, b"", "text/plain"
        if path == "/":
            body, kind = self.server.page, "text/html; charset=utf-8"
        elif path == "/hold":
            self.server.finished.wait(HOLD_TIMEOUT)
        elif path == "/done":
            self.server.finished.set()
        else:
            status = 404
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class PageServer:
    """The test page on a free 127.0.0.1 port (its origin is known before the service starts,
    so it can go into ALLOWED_ORIGINS); ``show`` sets what the page does."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.tls = tls
        self._httpd.finished = threading.Event()
        self.port: int = self._httpd.server_address[1]
        self.origin = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.url = self.origin + "/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def show(self, urls: list[str], payload: dict[str, str]) -> None:
        """The page opens each of ``urls`` in turn; after a welcome it sends ``payload``."""
        config = json.dumps({"urls": urls, "payload": payload}).replace("</", "<\\/")
        self._httpd.page = PAGE.format(config=config).encode()
        self._httpd.finished.clear()

    def close(self) -> None:
        self._httpd.finished.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> PageServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def tls_context(folder: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1 (Chromium is told
    to ignore certificate errors; the page is still an https page, a secure context)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "page-cert.pem", folder / "page-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


_CONSOLE = re.compile(r':INFO:CONSOLE[^\]]*\] "(.*)", source: ')
_RESULTS = re.compile(r'<pre id="results">(.*?)</pre>', re.DOTALL)


@dataclass
class BrowserRun:
    """What one headless Chromium run showed: the page's results, console and timing."""

    dom: str
    console: list[str]
    stderr: str
    seconds: float
    attempts: list[dict[str, Any]]

    def attempt(self, url: str) -> dict[str, Any]:
        for attempt in self.attempts:
            if attempt.get("url") == url:
                return attempt
        raise AssertionError(f"no attempt for {url} in {self.attempts}")

    def console_about(self, url: str) -> list[str]:
        """Console messages naming ``url`` (Chromium writes ``'ws://host:port/path'``)."""
        return [line for line in self.console if f"'{url}'" in line]


def run_chromium(url: str, profile: Path, *, budget_ms: int = 10_000,
                 timeout: float = 60.0) -> BrowserRun:
    """Load ``url`` in headless Chromium, wait for the page's marker, parse its results."""
    assert CHROMIUM, "chromium is not installed: apt-get install -y chromium (scripts/test.sh)"
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps",
        "--disable-extensions", "--enable-logging=stderr", f"--user-data-dir={profile}",
        f"--host-resolver-rules={RESOLVER_RULES}", f"--virtual-time-budget={budget_ms}",
        "--dump-dom", url,
    ]
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"chromium did not finish within {timeout}s: {exc.stderr!r}") from None
    seconds = time.monotonic() - started
    console = [m.group(1) for m in map(_CONSOLE.search, done.stderr.splitlines()) if m]
    found = _RESULTS.search(done.stdout)
    if done.returncode != 0 or found is None or '<p id="done">done</p>' not in done.stdout:
        raise AssertionError(
            f"chromium exited {done.returncode} without the page's results; DOM:\n"
            f"{done.stdout[-3000:]}\nconsole: {console}\nstderr tail:\n{done.stderr[-2000:]}")
    attempts: list[dict[str, Any]] = json.loads(html.unescape(found.group(1)))
    return BrowserRun(done.stdout, console, done.stderr, seconds, attempts)

