"""A raw-socket WebSocket client for hostile input: any frame, any bytes, any handshake.

``websockets`` refuses to send invalid UTF-8 in a text frame, reserved opcodes or unmasked
frames; this client writes RFC 6455 frames byte by byte. Loopback (127.0.0.1) only.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from smoke.conformance.frames import build_frame

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """One frame, as a client sends it (masked) or as no client may (``mask=False``)."""
    return build_frame(opcode, payload, fin=fin, mask=mask)


@dataclass
class Outcome:
    """What the server did after our input: a reply, a close frame, or a bare disconnect."""

    kind: str  # "reply", "close" or "eof" (connection ended without a close frame: 1006)
    message: dict[str, Any] | None = None
    code: int | None = None
    reason: str = ""

    @property
    def label(self) -> str:
        if self.kind == "reply":
            assert self.message is not None
            return f"reply {self.message.get('type')}"
        if self.kind == "close":
            return f"close {self.code}"
        return "eof 1006"


class RawWebSocket:
    """One connection to ws://127.0.0.1:port/path, driven frame by frame."""

    def __init__(self, port: int, timeout: float = 5.0, source: str | None = None) -> None:
        """``source``: the loopback address to connect from (127.0.0.2, ...: another client)."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buffer = b""
        self.head = ""
        """The status line and headers of the last answer to a handshake."""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawWebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def request(path: str, headers: dict[str, str] | None = None) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def handshake(self, path: str, headers: dict[str, str] | None = None) -> int:
        """Send an upgrade request; the HTTP status of the answer (0: closed without one)."""
        self.sock.sendall(self.request(path, headers))
        return self.read_status()

    def read_status(self) -> int:
        while b"\r\n\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                return 0
            self.buffer += data
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.head = head.decode("latin-1")
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0

    def send(self, opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> None:
        self.sock.sendall(encode_frame(opcode, payload, fin=fin, mask=mask))

    def _read(self, n: int, deadline: float) -> bytes | None:
        while len(self.buffer) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def recv_frame(self, deadline: float) -> tuple[int, bytes] | None:
        """(opcode, payload) of the next whole frame from the server; None at end of stream."""
        head = self._read(2, deadline)
        if head is None:
            return None
        opcode, size = head[0] & 0x0F, head[1] & 0x7F
        if size == 126:
            ext = self._read(2, deadline)
            if ext is None:
                return None
            size = struct.unpack("!H", ext)[0]
        elif size == 127:
            ext = self._read(8, deadline)
            if ext is None:
                return None
            size = struct.unpack("!Q", ext)[0]
        payload = self._read(size, deadline) if size else b""
        if payload is None:
            return None
        return opcode, payload

    def outcome(self, timeout: float = 5.0, skip: tuple[str, ...] = ("heartbeat",)) -> Outcome:
        """The server's first reaction, skipping heartbeats (and other ``skip`` types)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv_frame(deadline)  # raises TimeoutError past the deadline
            if frame is None:
                return Outcome("eof", code=1006)
            opcode, payload = frame
            if opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return Outcome("close", code=code, reason=payload[2:].decode(errors="replace"))
            if opcode == TEXT:
                message: dict[str, Any] = json.loads(payload)
                if message.get("type") in skip:
                    continue
                return Outcome("reply", message=message)


def flood_until_blocked(ws: RawWebSocket) -> None:
    """Send echo requests without reading until both directions are full."""
    frame = encode_frame(TEXT, json.dumps({"type": "bulk", "data": "x" * 60_000}).encode())
    ws.sock.settimeout(0.5)
    for _ in range(400):  # bounded: 24 MB at most
        try:
            ws.sock.sendall(frame)
        except TimeoutError:
            return
        except (ConnectionResetError, BrokenPipeError):
            return  # blocked, and already dropped by the server
    raise AssertionError("the server kept reading without blocking")
