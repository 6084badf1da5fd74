"""One raw WebSocket connection, driven frame by frame, that records what the server does.

An :class:`asyncio.Protocol` rather than streams: a ``StreamReader`` raises a reset before
returning the bytes that arrived ahead of it, and a close frame followed by a reset is
exactly what some cases must see. Every wait has a deadline; nothing here can hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from smoke.conformance.frames import (
    BINARY,
    CLOSE,
    CONT,
    NO_STATUS,
    PING,
    PONG,
    RSV1,
    TEXT,
    Frame,
    FrameParser,
    Inflater,
    accept_for,
    build_frame,
    close_payload,
    handshake_request,
    new_key,
    parse_close,
    parse_response_head,
    wire_close_code_valid,
)
from smoke.target import UsageError

End = Literal["fin", "reset"]
_MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Endpoint:
    """The URL under test: where to connect and what to ask for."""

    url: str
    secure: bool
    host: str
    port: int
    resource: str

    @property
    def host_header(self) -> str:
        default = 443 if self.secure else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_endpoint(url: str) -> Endpoint:
    """ws://, wss://, http:// or https:// and the full path: the endpoint itself, unlike the
    base URL the checks take (any server's echo endpoint, wherever it lives)."""
    text = url.strip()
    if "://" not in text:
        text = "ws://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in {"ws", "wss", "http", "https"}:
        raise UsageError(f"unsupported URL scheme {parts.scheme!r} in {url!r}: "
                         "use ws://, wss://, http:// or https://")
    if not parts.hostname:
        raise UsageError(f"no host in URL {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"bad port in URL {url!r}: {exc}") from None
    secure = scheme in {"wss", "https"}
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    shown = ("wss" if secure else "ws") + "://" + parts.netloc + resource
    return Endpoint(url=shown, secure=secure, host=parts.hostname,
                    port=port or (443 if secure else 80), resource=resource)


@dataclass(frozen=True)
class ClientSettings:
    origin: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 5.0
    ssl_context: ssl.SSLContext | None = None
    address: str | None = None
    """Connect here instead of resolving the host (``--resolve``)."""


class HandshakeError(Exception):
    """No WebSocket: refused, timed out, not 101, or a wrong Sec-WebSocket-Accept."""

    def __init__(self, detail: str, *, status: int | None = None,
                 unreachable: bool = False) -> None:
        super().__init__(detail)
        self.status = status
        self.unreachable = unreachable


class _Wire(asyncio.Protocol):
    """Bytes in, end of stream (FIN or reset) noted with its time, a waiter woken each time."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.data_at = 0.0
        """When the latest bytes arrived: the arrival time of the frames parsed from them."""
        self.end: End | None = None
        self.end_at: float | None = None
        self.transport: asyncio.Transport | None = None
        self._tls = False
        self.aborted = False
        """This client ended the connection: what ends it next is not the server's doing."""
        self._changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._tls = transport.get_extra_info("sslcontext") is not None

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.data_at = time.monotonic()
        self._changed.set()

    def eof_received(self) -> bool:
        self._ended("fin")
        # Keep our side open: a client may still answer with its close frame (TLS cannot:
        # asyncio closes a TLS transport at the peer's end of stream and warns if asked).
        return not self._tls

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended("fin" if exc is None else "reset")

    def _ended(self, how: End) -> None:
        if self.end is None and not self.aborted:
            self.end, self.end_at = how, time.monotonic()
        self._changed.set()

    async def changed(self, deadline: float) -> bool:
        """Wait for new bytes or the end; False at the deadline."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return False
        return True


@dataclass
class Message:
    """A whole data message from the server (reassembled, inflated if compressed)."""

    opcode: int
    payload: bytes


@dataclass
class Record:
    """Everything the server did on this connection, for the verdict and the report."""

    frames: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    pongs: list[bytes] = field(default_factory=list)
    close_code: int | None = None
    close_reason: bytes | None = None
    close_at: float | None = None
    close_received: bool = False
    violations: list[str] = field(default_factory=list)
    """What the server itself got wrong (masked frames, reserved bits, bad close frames)."""


class Connection:
    """A WebSocket after a successful handshake; the case drives it, the record fills up."""

    def __init__(self, wire: _Wire, settings: ClientSettings, *, status: int,
                 headers: dict[str, str], leftover: bytes) -> None:
        self._wire = wire
        self.settings = settings
        self.status = status
        self.headers = headers
        self.record = Record()
        self.sent_at = time.monotonic()
        """When the last frame went out: the start of every "time to close"."""
        self.client_close_at: float | None = None
        self.mark_at: float | None = None
        self.mark_index = 0
        """Messages received before the mark: not replies to the case's input."""
        self.inflater: Inflater | None = None
        self._parser = FrameParser()
        self._fragments: list[Frame] = []
        self._pending = bytearray(leftover)

    # --- opening ------------------------------------------------------------------------

    @classmethod
    async def open(cls, endpoint: Endpoint, settings: ClientSettings,
                   extensions: str | None = None) -> Connection:
        deadline = time.monotonic() + settings.timeout
        loop = asyncio.get_running_loop()
        address = settings.address or endpoint.host
        try:
            _, wire = await asyncio.wait_for(loop.create_connection(
                _Wire, address, endpoint.port, ssl=settings.ssl_context,
                server_hostname=endpoint.host if settings.ssl_context else None),
                settings.timeout)
        except TimeoutError:
            raise HandshakeError(f"connect to {address}:{endpoint.port}: no answer within "
                                 f"{settings.timeout:g}s", unreachable=True) from None
        except (OSError, ssl.SSLError) as exc:
            raise HandshakeError(f"connect to {address}:{endpoint.port}: {exc}",
                                 unreachable=True) from None
        key = new_key()
        assert wire.transport is not None
        wire.transport.write(handshake_request(
            endpoint.host_header, endpoint.resource, key, origin=settings.origin,
            headers=settings.headers, extensions=extensions))
        while b"\r\n\r\n" not in wire.data:
            if wire.end is not None or len(wire.data) > _MAX_HEAD:
                wire.transport.abort()
                raise HandshakeError("the server closed the connection without answering the "
                                     "handshake", unreachable=True)
            if not await wire.changed(deadline):
                wire.transport.abort()
                raise HandshakeError(f"no handshake answer within {settings.timeout:g}s",
                                     unreachable=True)
        head, _, leftover = bytes(wire.data).partition(b"\r\n\r\n")
        wire.data.clear()
        status, headers = parse_response_head(head)
        if status != 101:
            wire.transport.abort()
            raise HandshakeError(f"handshake answered HTTP {status}, not 101", status=status)
        if headers.get("sec-websocket-accept") != accept_for(key):
            wire.transport.abort()
            raise HandshakeError("wrong or missing Sec-WebSocket-Accept (RFC 6455 section "
                                 "4.2.2)", status=status)
        return cls(wire, settings, status=status, headers=headers, leftover=leftover)

    # --- sending --------------------------------------------------------------------------

    @property
    def ended(self) -> End | None:
        return self._wire.end

    @property
    def end_at(self) -> float | None:
        return self._wire.end_at

    def send_raw(self, data: bytes) -> None:
        """Write without waiting for the server to read (it may stop reading: that is a case).

        The transport buffers what the socket does not take; a closed one drops it."""
        transport = self._wire.transport
        if transport is None or transport.is_closing() or self._wire.end == "reset":
            return
        transport.write(data)
        self.sent_at = time.monotonic()

    def send(self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
             mask: bool = True, length: int | None = None) -> None:
        self.send_raw(build_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, length=length))

    def send_close(self, code: int | None = 1000, reason: bytes = b"") -> None:
        self.send(CLOSE, close_payload(code, reason))
        self.client_close_at = self.sent_at

    # --- receiving ------------------------------------------------------------------------

    async def wait(self, done: Callable[[], bool], timeout: float | None = None) -> bool:
        """Read frames until ``done()``, the end of the connection or the timeout (default:
        the settings'); True when ``done()`` became true."""
        deadline = time.monotonic() + (self.settings.timeout if timeout is None else timeout)
        while True:
            self._take()
            if done():
                return True
            if self._wire.end is not None:
                if not self.record.frames or self.record.frames[-1] not in ("FIN", "RST"):
                    self.record.frames.append("FIN" if self._wire.end == "fin" else "RST")
                return done()
            if not await self._wire.changed(deadline):
                self._take()
                return done()

    async def wait_close(self, timeout: float | None = None) -> bool:
        """Until the server's close frame (or the end of TCP)."""
        return await self.wait(lambda: self.record.close_received or self.ended is not None,
                               timeout)

    async def wait_end(self, timeout: float | None = None) -> bool:
        """Until the server ends the TCP connection."""
        return await self.wait(lambda: self.ended is not None, timeout)

    def _take(self) -> None:
        data = bytes(self._pending) + bytes(self._wire.data)
        self._pending.clear()
        self._wire.data.clear()
        if data:
            for frame in self._parser.feed(data):
                self._on_frame(frame)

    def _on_frame(self, frame: Frame) -> None:
        rec = self.record
        rec.frames.append(frame.describe())
        if frame.masked:
            rec.violations.append("the server masked a frame (section 5.1: MUST NOT)")
        allowed_rsv = RSV1 if self.inflater is not None else 0
        if frame.rsv & ~allowed_rsv or (frame.rsv and frame.opcode in (CONT, CLOSE, PING, PONG)):
            rec.violations.append(f"reserved bits {frame.rsv:03b} on a {frame.describe()} "
                                  "(section 5.2)")
        if frame.opcode == PING:
            if self.client_close_at is None and not rec.close_received:
                self.send(PONG, frame.payload)
        elif frame.opcode == PONG:
            rec.pongs.append(frame.payload)
        elif frame.opcode == CLOSE:
            self._on_close(frame)
        elif frame.opcode in (TEXT, BINARY, CONT):
            self._on_data(frame)
        else:
            rec.violations.append(f"the server sent reserved {frame.describe()} (section 5.2)")

    def _on_close(self, frame: Frame) -> None:
        rec = self.record
        if rec.close_received:
            rec.violations.append("a second close frame (section 5.5.1)")
            return
        code, reason = parse_close(frame.payload)
        rec.close_received, rec.close_at = True, self._wire.data_at
        rec.close_code = NO_STATUS if code is None else code
        rec.close_reason = reason
        if len(frame.payload) == 1:
            rec.violations.append("a close frame with a one-byte body (section 5.5.1)")
        if reason:
            try:
                reason.decode()
            except UnicodeDecodeError:
                rec.violations.append("a close reason that is not UTF-8 (section 5.5.1)")

    def _on_data(self, frame: Frame) -> None:
        rec = self.record
        if frame.opcode == CONT and not self._fragments:
            rec.violations.append("a continuation frame with no message started (section 5.4)")
            return
        if frame.opcode != CONT and self._fragments:
            rec.violations.append("a new message inside a fragmented one (section 5.4)")
            self._fragments.clear()
        self._fragments.append(frame)
        if not frame.fin:
            return
        first, payload = self._fragments[0], b"".join(f.payload for f in self._fragments)
        self._fragments.clear()
        if first.rsv & RSV1 and self.inflater is not None:
            try:
                payload = self.inflater.inflate(payload)
            except Exception as exc:  # zlib.error: the server's compressed data is corrupt
                rec.violations.append(f"a compressed message that does not inflate ({exc})")
                return
        rec.messages.append(Message(first.opcode, payload))

    # --- ending ---------------------------------------------------------------------------

    async def finish(self) -> None:
        """Leave the connection as a polite client would, however the case ended: answer or
        start the close handshake, wait (bounded) for the server's FIN, then close ours."""
        try:
            if self.ended is None:
                if self.client_close_at is None:
                    self.send_close(self.reply_code())
                await self.wait_end(min(self.settings.timeout, 2.0))
        finally:
            self.abort()

    def reply_code(self) -> int:
        """The code to answer the server's close with: its own when valid (section 5.5.1)."""
        code = self.record.close_code
        return code if code is not None and wire_close_code_valid(code) else 1000

    def mark(self) -> None:
        """The case's input is all sent: times to close count from here."""
        self.mark_at = self.sent_at
        self.mark_index = len(self.record.messages)

    def abort(self) -> None:
        transport = self._wire.transport
        self._wire.aborted = True
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(Exception):
                transport.abort()
