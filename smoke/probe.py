"""One WebSocket connection under observation: every way it can fail becomes ``Evidence``.

Server messages are decoded with the service's own wire Structs (``service.messages``), one
``msgspec.json.Decoder`` per endpoint union, so the contract has a single source of truth.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
import time
from typing import Any, NoReturn, TypeVar

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidProxy,
    InvalidStatus,
    ProxyError,
    WebSocketException,
)
from websockets.proxy import get_proxy
from websockets.typing import Origin
from websockets.uri import parse_uri

from service.codes import CloseCode
from service.messages import SERVER_MESSAGES, Echo, Heartbeat, WsEcho
from smoke.model import ErrorKind, Evidence
from smoke.target import Options
from smoke.tls import classify, client_context, explain

DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    path: msgspec.json.Decoder(union) for path, union in SERVER_MESSAGES.items()
}
_encode = msgspec.json.Encoder().encode


EchoT = TypeVar("EchoT", Echo, WsEcho)


def _echoed(message: object) -> bytes | None:
    """What an echo carries back: ``/ws/echo``'s ``original``, ``/ws``'s ``data``."""
    if isinstance(message, Echo):
        return bytes(message.original)
    if isinstance(message, WsEcho):
        return bytes(message.data)
    return None


class ProbeError(Exception):
    """A step failed; the evidence says how."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Probe:
    """Open, send, receive and close one connection, recording evidence as it goes."""

    def __init__(self, url: str, endpoint: str, options: Options, *,
                 origin: str | None = None, use_origin: bool = True) -> None:
        self.endpoint = endpoint
        self.options = options
        self.origin = (origin or options.origin) if use_origin else origin
        self.evidence = Evidence(url=url, origin=self.origin)
        self._decoder = DECODERS[endpoint]
        self._ws: ClientConnection | None = None
        self.opened_at = 0.0
        self.last_received = 0.0
        self._pongs_sent: list[bytes] = []
        """Pongs not yet echoed back: /ws/echo and /ws echo a pong like any message."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        ev = self.evidence
        proxy: str | None = None
        try:
            uri = parse_uri(ev.url)
            if self.options.use_env_proxy:
                proxy = get_proxy(uri)
                ev.proxy = proxy
            where: dict[str, Any] = {}
            address = self.options.address_for(uri.host, uri.port)
            if address is not None:  # --resolve: this address, the URL's name for the rest
                where = {"host": address, "port": uri.port}
                ev.connected_to = address
            if uri.secure:
                where["ssl"] = client_context(self.options)
                where["server_hostname"] = uri.host
            self._ws = await websockets.connect(
                ev.url,
                origin=Origin(self.origin) if self.origin is not None else None,
                additional_headers=list(self.options.headers),
                open_timeout=self.options.timeout,
                close_timeout=self.options.timeout,
                # No client protocol pings: they would reset a proxy's idle timer and hide the
                # very timeout this tool looks for. Keep-alive is the server's heartbeat.
                ping_interval=None,
                user_agent_header="ws-smoke",
                # websockets uses http(s)_proxy/all_proxy by default, which would silently
                # check the proxy instead of the target: only with --use-env-proxy.
                proxy=proxy,
                **where,
            )
        except InvalidStatus as exc:
            response = exc.response
            ev.http_status = response.status_code
            ev.server_header = response.headers.get("Server")
            ev.allow_header = response.headers.get("Allow")
            ev.error = "http_status"
            body = bytes(response.body or b"")[:200].decode(errors="replace").strip()
            ev.error_detail = f"HTTP {response.status_code} {response.reason_phrase}" + (
                f": {body}" if body else ""
            )
            raise ProbeError(f"handshake rejected: {ev.error_detail}") from None
        except (InvalidProxy, ProxyError) as exc:
            self._fail("proxy", f"proxy {proxy or '(from the environment)'} failed: {exc}")
        except ConnectionRefusedError as exc:
            self._fail("refused", f"connection refused ({exc.strerror})")
        except socket.gaierror as exc:
            self._fail("dns", f"cannot resolve host ({exc.strerror})")
        except ssl.SSLError as exc:
            ev.tls_error = classify(exc)
            self._fail("tls", explain(ev.tls_error, exc))
        except TimeoutError:
            self._fail("connect_timeout",
                       f"no handshake response within {self.options.timeout:g}s")
        except InvalidHandshake as exc:
            self._fail("handshake", f"invalid handshake: {exc}")
        except WebSocketException as exc:
            self._fail("handshake", f"websocket error while connecting: {exc!r}")
        except OSError as exc:
            self._fail("network", f"network error: {exc.strerror or exc}")
        except Exception as exc:  # recorded, so the run still ends with a report
            self._fail("client_error", f"unexpected error while connecting: {exc!r}")
        ev.http_status = 101
        ev.opened = True
        self.opened_at = self.last_received = time.monotonic()

    def _fail(self, kind: ErrorKind, detail: str) -> NoReturn:
        self.evidence.error = kind
        self.evidence.error_detail = detail
        raise ProbeError(detail) from None

    @property
    def ws(self) -> ClientConnection:
        if self._ws is None:
            raise ProbeError("not connected")
        return self._ws

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        """The TLS session of an open ``wss://`` connection (None over ws://)."""
        if self._ws is None:
            return None
        obj: ssl.SSLObject | None = self._ws.transport.get_extra_info("ssl_object")
        return obj

    @property
    def age(self) -> float:
        return time.monotonic() - self.opened_at

    def _record_close(self, exc: ConnectionClosed) -> None:
        ev = self.evidence
        now = time.monotonic()
        ev.age_at_close_s = round(now - self.opened_at, 3)
        ev.idle_at_close_s = round(now - self.last_received, 3)
        if exc.rcvd is not None:
            ev.close_code = exc.rcvd.code
            ev.close_reason = exc.rcvd.reason
            ev.closed_by = "server" if exc.rcvd_then_sent is not False else "client"
        else:
            ev.close_code = CloseCode.ABNORMAL_CLOSURE
            ev.close_reason = ""
            ev.closed_by = "network"

    async def close(self, code: int = 1000, reason: str = "ws-smoke done") -> None:
        """Close from our side; records what the server answered (1000 expected)."""
        ws = self._ws
        if ws is None or self.evidence.close_code is not None:
            return
        await ws.close(code, reason)
        ev = self.evidence
        ev.age_at_close_s = round(self.age, 3)
        ev.idle_at_close_s = round(time.monotonic() - self.last_received, 3)
        rcvd = ws.protocol.close_rcvd
        ev.close_code = rcvd.code if rcvd is not None else CloseCode.ABNORMAL_CLOSURE
        ev.close_reason = rcvd.reason if rcvd is not None else ""
        ev.closed_by = "client"

    async def abort(self) -> None:
        if self._ws is not None and self.evidence.close_code is None:
            await self.close()

    # -- messages ----------------------------------------------------------------------------

    async def send(self, message: msgspec.Struct | dict[str, Any]) -> bytes:
        data = _encode(message)
        try:
            await self.ws.send(data.decode())
        except ConnectionClosed as exc:
            self._record_close(exc)
            self.evidence.error = "closed"
            raise ProbeError(self._closed_text()) from None
        return data

    async def answer(self, heartbeat: Heartbeat) -> None:
        """Answer a heartbeat with a pong, as a real client does (raises ProbeError if the
        connection closed meanwhile). On /ws/echo and /ws the server echoes it back."""
        data = await self.send({"type": "pong", "ping_number": heartbeat.ping_number})
        if self.endpoint != "/ws/health":
            self._pongs_sent.append(data)

    async def round_trip(self, message_type: str, kind: type[EchoT], deadline: float,
                         ) -> tuple[bytes, EchoT]:
        """Send ``{"type": message_type, "data": <nonce>}`` and read its echo (``kind``),
        which must carry the message back unchanged (else a ``mismatch`` ProbeError)."""
        sent = await self.send({"type": message_type, "data": secrets.token_hex(8)})
        echo: EchoT = await self.recv_until(kind, deadline)
        got = _echoed(echo)
        if got is None or msgspec.json.decode(got) != msgspec.json.decode(sent):
            self.evidence.error = "mismatch"
            field = "original" if isinstance(echo, Echo) else "data"
            raise ProbeError(f"{field} {(got or b'')[:80]!r} does not match sent {sent[:80]!r}")
        return sent, echo

    def _echoed_pong(self, message: Any) -> bool:
        """An echo of a pong this probe sent: not a reply to anything the check asked."""
        raw = _echoed(message)
        if raw is None:
            return False
        try:
            decoded = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return False
        for i, sent in enumerate(self._pongs_sent):
            if msgspec.json.decode(sent) == decoded:
                del self._pongs_sent[i]
                return True
        return False

    async def recv(self, wait: float | None = None) -> Any:
        """The next server message, decoded with the endpoint's union; heartbeats included."""
        limit = self.options.timeout if wait is None else wait
        try:
            raw = await asyncio.wait_for(self.ws.recv(), max(limit, 0.0))
        except TimeoutError:
            self.evidence.error = "timeout"
            self.evidence.error_detail = f"no message within {limit:.3g}s"
            raise ProbeError(self.evidence.error_detail) from None
        except ConnectionClosed as exc:
            self._record_close(exc)
            self.evidence.error = "closed"
            raise ProbeError(self._closed_text()) from None
        self.last_received = time.monotonic()
        ev = self.evidence
        ev.messages_received += 1
        try:
            message = self._decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            ev.error = "unexpected_message"
            text = raw if isinstance(raw, str) else repr(raw)
            ev.error_detail = f"message outside the {self.endpoint} contract ({exc}): {text[:160]}"
            raise ProbeError(ev.error_detail) from None
        if isinstance(message, Heartbeat):
            ev.heartbeats_received += 1
        return message

    async def recv_until(self, kind: type[Any], deadline: float) -> Any:
        """Skip heartbeats (answering each with a pong) and the echoes of those pongs until a
        ``kind`` message arrives."""
        while True:
            message = await self.recv(deadline - time.monotonic())
            if isinstance(message, Heartbeat):
                await self.answer(message)
                continue
            if self._echoed_pong(message):
                continue
            if isinstance(message, kind):
                return message
            raise ProbeError(
                f"expected {kind.__name__}, got {type(message).__name__}: "
                f"{_encode(message).decode()[:160]}"
            )

    def _closed_text(self) -> str:
        ev = self.evidence
        return f"connection closed: {ev.summary()}"
