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

import base64
import contextlib
import datetime
import html
import ipaddress
import json
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
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
from websockets.sync.client import connect

from testkit.processes import LineLog
from testkit.service import start_service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOLD_TIMEOUT = 20.0
PAYLOAD_TYPE = "browser_check"

# Chromium may resolve loopback names only: every other name (its own background services
# included) fails at once, so nothing but 127.0.0.1 is ever contacted. FOREIGN_HOST is a
# name that is not loopback to the service (it must check the Origin) yet reaches 127.0.0.1.
FOREIGN_HOST = "app.ws-kit.test"
RESOLVER_RULES = (f"MAP {FOREIGN_HOST} 127.0.0.1, MAP * ~NOTFOUND, "
                  "EXCLUDE localhost, EXCLUDE *.localhost, EXCLUDE 127.0.0.1")

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
    headers: dict[str, str] = {}  # noqa: RUF012 - replaced, never mutated
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
        if path == "/":
            for name, value in self.server.headers.items():
                self.send_header(name, value)
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

    def serve(self, page: bytes, headers: dict[str, str]) -> None:
        """Serve ``page`` as it is (another page than the test page) with ``headers``."""
        self._httpd.page = page
        self._httpd.headers = dict(headers)

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



# --- Chromium driven over the DevTools protocol -------------------------------------------------

_DEVTOOLS = r"DevTools listening on (ws://127\.0\.0\.1:\d+/\S+)"
DONE_EXPRESSION = """new Promise((resolve) => {
  const report = () => document.getElementById("ws-check-report").textContent;
  if (document.documentElement.dataset.wsCheck) resolve(report());
  else document.addEventListener("ws-check-done", () => resolve(report()), {once: true});
})"""
"""Resolves with the check page's report once the page says it is done (an event, not a poll)."""


class Chromium:
    """Headless Chromium with a DevTools session on one page (``--remote-debugging-port=0``:
    the browser picks a free 127.0.0.1 port and prints it, so nothing is guessed).

    ``open`` navigates and returns after the load event; ``evaluate`` can await a promise the
    page resolves (the check page's ``ws-check-done`` event), so tests wait on the page's own
    events. Console messages and browser log entries (CSP, mixed content) are collected.
    """

    def __init__(self, profile: Path, *, width: int = 1000, height: int = 900) -> None:
        assert CHROMIUM, "chromium is not installed: apt-get install -y chromium (scripts/test.sh)"
        argv = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--ignore-certificate-errors", "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--hide-scrollbars",
            f"--user-data-dir={profile}", f"--host-resolver-rules={RESOLVER_RULES}",
            f"--window-size={width},{height}", "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0", "about:blank",
        ]
        self.log = LineLog(argv)
        self.proc = self.log.proc
        self.console: list[str] = []
        try:
            _, endpoint = self.log.wait_for_match(_DEVTOOLS, 30)
        except AssertionError:
            self.close()
            raise
        self._stack = contextlib.ExitStack()
        self._ws = self._stack.enter_context(connect(
            endpoint.group(1), proxy=None, max_size=None, ping_interval=None, open_timeout=10))
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self.session = ""

    def call(self, method: str, params: dict[str, Any] | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        """One DevTools command on the page's session; events read meanwhile are kept."""
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        self._ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no answer to {method} within {timeout}s; console:\n"
                                     + "\n".join(self.console))
            try:
                reply: dict[str, Any] = json.loads(self._ws.recv(timeout=left))
            except TimeoutError:
                continue
            if reply.get("id") == ident:
                if "error" in reply:
                    raise AssertionError(f"{method} failed: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self._event(reply)

    def _event(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append(f"console.{params['type']}: {text}")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            self.console.append(f"{entry['source']}.{entry['level']}: {entry['text']}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.console.append(f"exception: {details.get('exception', {}).get('description')}"
                                f" {details.get('text')}")

    def _wait_event(self, method: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self._events:
                if event.get("method") == method:
                    self._events.remove(event)
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {method} within {timeout}s; console:\n"
                                     + "\n".join(self.console))
            try:
                self._event(json.loads(self._ws.recv(timeout=left)))
            except TimeoutError:
                continue

    def open(self, url: str, *, width: int = 1000, height: int = 900, mobile: bool = False,
             timeout: float = 30.0) -> None:
        """A new page at ``url`` (``width`` x ``height`` CSS pixels), after its load event."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 2 if mobile else 1,
            "mobile": mobile})
        self.call("Page.navigate", {"url": url})
        self._wait_event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """``expression``'s value; a promise is awaited (in the page, up to ``timeout``)."""
        result = self.call("Runtime.evaluate", {
            "expression": expression, "awaitPromise": True, "returnByValue": True,
            "timeout": int(timeout * 1000)}, timeout=timeout + 5)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression[:60]!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def report(self, timeout: float) -> dict[str, Any]:
        """The check page's report, once the page is done (fails with the console if not)."""
        text = self.evaluate(DONE_EXPRESSION, timeout)
        assert text, f"the check page wrote no report; console:\n{self.console}"
        report: dict[str, Any] = json.loads(text)
        return report

    def screenshot(self, path: Path, *, full_page: bool = True) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True, clip={
                "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = self.call("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if getattr(self, "_stack", None) is not None:
            self._stack.close()
        self.log.stop(timeout=10)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def screenshot_check_page(out: Path, *, sustain: float = 5, width: int = 900) -> None:
    """A finished /ws-check run against a fresh service (heartbeat 1 s), from the top to the
    checks table: ``docs/img/ws-check.png`` is made by ``python -m testkit.browser``."""
    service = start_service({"WS_PING_INTERVAL": "1", "WS_PING_TIMEOUT": "0.5"})
    try:
        with tempfile.TemporaryDirectory() as profile, Chromium(Path(profile)) as browser:
            browser.open(f"http://localhost:{service.port}/ws-check?sustain={sustain:g}",
                         width=width, height=1000)
            report = browser.report(timeout=sustain + 60)
            assert report["verdict"]["status"] == "pass", report
            bottom = browser.evaluate(
                'document.getElementById("log-h").getBoundingClientRect().top + scrollY - 8')
            data = browser.call("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": bottom, "scale": 1}})["data"]
            out.write_bytes(base64.b64decode(data))
    finally:
        service.stop()


if __name__ == "__main__":
    screenshot_check_page(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img/ws-check.png"))
