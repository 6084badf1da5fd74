"""RFC 6455 frames built by hand (any bit, any length, masked or not) and parsed leniently.

The builder writes exactly what a case asks for, including what no client library sends
(reserved bits, reserved opcodes, unmasked or fragmented control frames, a length with no
payload). The parser accepts whatever the server sends and reports it, so a server's own
violation (a masked frame, a reserved bit) is an observation, not a crash of this tool.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass

from websockets.utils import apply_mask

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
OPCODE_NAMES = {CONT: "continuation", TEXT: "text", BINARY: "binary", CLOSE: "close",
                PING: "ping", PONG: "pong"}
RSV1, RSV2, RSV3 = 0b100, 0b010, 0b001
MAX_CONTROL_PAYLOAD = 125
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

NO_STATUS, ABNORMAL = 1005, 1006
"""What a client reports for a close frame without a status code, and for no close frame."""


def opcode_name(opcode: int) -> str:
    return OPCODE_NAMES.get(opcode, f"opcode 0x{opcode:X}")


def is_control(opcode: int) -> bool:
    return bool(opcode & 0x8)


def wire_close_code_valid(code: int) -> bool:
    """May ``code`` appear in a close frame (RFC 6455 section 7.4, IANA registry)?

    1004 (reserved), 1005, 1006 and 1015 are for reporting only; 1000-2999 are the protocol's
    (only registered ones); 3000-4999 belong to libraries and applications.
    """
    if 3000 <= code <= 4999:
        return True
    return code in {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}


def build_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
                mask: bool = True, length: int | None = None, key: bytes | None = None) -> bytes:
    """One frame, byte for byte. ``rsv``: RSV1/RSV2/RSV3 bits; ``length``: the length the
    header announces when it must differ from the payload's (a header with no payload)."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | ((rsv & 0b111) << 4) | (opcode & 0x0F)
    bit = 0x80 if mask else 0
    if size < 126:
        header = struct.pack("!BB", first, bit | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, bit | 127, size)
    if not mask:
        return header + payload
    key = os.urandom(4) if key is None else key
    return header + key + apply_mask(payload, key)


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    """A close frame's body: a status code and a reason (raw bytes: a case may break UTF-8)."""
    return b"" if code is None else struct.pack("!H", code) + reason


def parse_close(payload: bytes) -> tuple[int | None, bytes]:
    """(code, reason bytes); code None for an empty body. A one-byte body gives code 0."""
    if not payload:
        return None, b""
    if len(payload) == 1:
        return 0, b""
    return struct.unpack("!H", payload[:2])[0], payload[2:]


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame as the server sent it (payload unmasked if the server masked it)."""

    fin: bool
    rsv: int
    opcode: int
    masked: bool
    payload: bytes

    def describe(self) -> str:
        name = opcode_name(self.opcode)
        flags = "" if self.fin else " (FIN=0)"
        if self.rsv:
            flags += f" (RSV={self.rsv:03b})"
        if self.masked:
            flags += " (masked)"
        if self.opcode == CLOSE:
            code, reason = parse_close(self.payload)
            if code is None:
                return f"close (no status){flags}"
            text = reason.decode(errors="replace")
            return f"close {code}" + (f" {text!r}" if text else "") + flags
        return f"{name} {len(self.payload)} B{flags}"


class FrameParser:
    """Incremental: feed bytes as they arrive, take whole frames out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while (frame := self._next()) is not None:
            frames.append(frame)
        return frames

    def _next(self) -> Frame | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        size, offset = second & 0x7F, 2
        if size == 126:
            if len(buf) < 4:
                return None
            size, offset = struct.unpack_from("!H", buf, 2)[0], 4
        elif size == 127:
            if len(buf) < 10:
                return None
            size, offset = struct.unpack_from("!Q", buf, 2)[0], 10
        masked = bool(second & 0x80)
        key = b""
        if masked:
            if len(buf) < offset + 4:
                return None
            key, offset = bytes(buf[offset:offset + 4]), offset + 4
        if len(buf) < offset + size:
            return None
        payload = bytes(buf[offset:offset + size])
        del buf[:offset + size]
        if masked:
            payload = apply_mask(payload, key)
        return Frame(fin=bool(first & 0x80), rsv=(first >> 4) & 0b111, opcode=first & 0x0F,
                     masked=masked, payload=payload)


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer ``key`` with (section 4.2.2)."""
    digest = hashlib.sha1((key + GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def handshake_request(host: str, resource: str, key: str, *, origin: str | None = None,
                      headers: tuple[tuple[str, str], ...] = (),
                      extensions: str | None = None) -> bytes:
    lines = [f"GET {resource} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if origin:
        lines.append(f"Origin: {origin}")
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_response_head(head: bytes) -> tuple[int, dict[str, str]]:
    """(status, headers with lower-case names; repeated headers joined by ``, ``)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return status, headers


_DEFLATE_TAIL = b"\x00\x00\xff\xff"


def deflate_message(data: bytes, window_bits: int = 15) -> bytes:
    """A permessage-deflate payload (RFC 7692 section 7.2.1) with no context carried over,
    which every negotiated parameter set allows a client to send; ``window_bits``: the
    server's ``client_max_window_bits`` answer. zlib takes 9..15 (8 means 9 for deflate)."""
    compressor = zlib.compressobj(wbits=-max(9, window_bits))
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out.removesuffix(_DEFLATE_TAIL)


class Inflater:
    """Decompresses the server's messages; a new context per message when the server said
    ``server_no_context_takeover``."""

    def __init__(self, *, no_context_takeover: bool, window_bits: int = 15) -> None:
        self._reset = no_context_takeover
        self._bits = window_bits
        self._inflater = zlib.decompressobj(wbits=-window_bits)

    def inflate(self, payload: bytes) -> bytes:
        if self._reset:
            self._inflater = zlib.decompressobj(wbits=-self._bits)
        return self._inflater.decompress(payload + _DEFLATE_TAIL)
