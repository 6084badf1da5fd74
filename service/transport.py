"""The TCP connection under a WebSocket, which Granian does not let the app see.

Two of Granian's habits break the close the service promises (docs/design.md):

* it has no write timeout: when a peer stops reading, the connection's Rust task waits on the
  full socket for as long as the peer keeps it open, even after the ASGI app has returned. The
  socket stays ESTABLISHED, with megabytes in the kernel's buffers, outside every count the
  service keeps;
* it closes the TCP connection the moment its close frame is written, without waiting for
  the client's close frame (RFC 6455 section 7.1.1). A client that was still sending gets a
  reset for its next bytes, and most clients (Chromium, ``websockets``) then report 1006 and
  lose the code and reason that did arrive.

ASGI gives the app no handle on the socket, but the process owns its descriptor, found in
``/proc/self/fd`` by its exact address pair. A duplicate of it either shuts the connection
down (``shutdown(SHUT_RDWR)`` fails Granian's pending write at once, so Granian drops the
connection and closes its descriptor) or keeps the connection open after Granian has closed
its own, to read what the client still sends until its close frame: a lingering close, as
nginx does for HTTP. Linux only; elsewhere nothing is found and the service says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Literal

_FD_DIR = "/proc/self/fd"

Peer = tuple[str, int]
CloseAck = Literal["frame", "eof", "reset", "timeout"]


def _address(value: object) -> Peer | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]).lower().removeprefix("::ffff:"), int(value[1])
    return None


def peer_key(host: str, port: int | str) -> Peer:
    """127.0.0.1 and ::ffff:127.0.0.1 are one peer on a dual-stack socket."""
    return host.lower().removeprefix("::ffff:"), int(port)


def _scan(local_port: int, wanted: set[Peer]) -> dict[Peer, int] | None:
    """A duplicate descriptor of each wanted peer's TCP connection to ``local_port``.

    Matching both ends is exact: a live TCP connection is the only one with that pair, so a
    descriptor reused meanwhile cannot be mistaken for it. Costs one ``dup`` per descriptor of
    the process (about 5 us each), shared by every request waiting for this scan. None when
    there is no ``/proc``.
    """
    try:
        names = os.listdir(_FD_DIR)
    except OSError:
        return None
    found: dict[Peer, int] = {}
    for name in names:
        if len(found) == len(wanted):
            break
        try:
            if not os.readlink(f"{_FD_DIR}/{name}").startswith("socket:"):
                continue
            dup = os.dup(int(name))
        except (OSError, ValueError):
            continue  # closed meanwhile, the listing's own descriptor, or no descriptor left
        keep = False
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        try:
            if sock.type != socket.SOCK_STREAM:
                continue
            try:
                local = _address(sock.getsockname())
                remote = _address(sock.getpeername())
            except OSError:
                continue  # a listener or an unconnected socket
            # Not found twice: a number listed may by now be this scan's own duplicate.
            if (local is not None and local[1] == local_port and remote in wanted
                    and remote not in found):
                found[remote] = sock.detach()
                keep = True
        finally:
            if not keep:
                sock.close()
    return found


class Sockets:
    """Finds the descriptors of this process's connections to one port.

    Requests made while a scan runs wait for the next one, which serves them all: a shutdown
    closing ten thousand connections costs two scans, not ten thousand.
    """

    def __init__(self, local_port: int) -> None:
        self.local_port = local_port
        self.supported = True
        self._pending: dict[Peer, list[asyncio.Future[socket.socket | None]]] = {}
        self._scanner: asyncio.Task[None] | None = None

    async def hold(self, peer: Peer) -> socket.socket | None:
        """A duplicate of the descriptor of ``peer``'s connection; None when it is gone.

        The caller closes it. While it is open the connection outlives Granian's own close.
        """
        if not self.supported:
            return None
        future: asyncio.Future[socket.socket | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(peer, []).append(future)
        if self._scanner is None:
            self._scanner = asyncio.create_task(self._scan_while_asked())
        return await future

    async def _scan_while_asked(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                found = await asyncio.to_thread(_scan, self.local_port, set(batch))
                if found is None:
                    self.supported = False
                    found = {}
                for peer, futures in batch.items():
                    fd = found.pop(peer, None)
                    for future in futures:
                        if fd is not None and not future.done():
                            future.set_result(socket.socket(fileno=fd))
                            fd = None
                        elif not future.done():
                            future.set_result(None)
                    if fd is not None:  # every asker gave up meanwhile
                        os.close(fd)
        finally:
            self._scanner = None


def shut_down(sock: socket.socket) -> None:
    """Fail Granian's pending write on this connection now; it then closes its descriptor."""
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_CLIENT_OPCODES = frozenset({0x0, 0x1, 0x2, 0x8, 0x9, 0xA})
_MAX_CLOSE_FRAME = 2 + 4 + 125


def _ends_with_close_frame(tail: bytes) -> bool:
    """Whether the bytes end with a whole masked close frame (``0x88``, ``0x80 | length``,
    a 4-byte mask, at most 125 bytes of payload)."""
    for length in range(min(len(tail) - 6, 125) + 1):
        start = len(tail) - 6 - length
        if tail[start] == 0x88 and tail[start + 1] == 0x80 | length:
            return True
    return False


class _ClientFrames:
    """Walks the frames a client sends, payloads skipped, to find its close frame.

    It starts where Granian stopped reading, which is a frame boundary unless Granian had
    read part of a frame (a client sending large messages); a header no client may send
    (unmasked, reserved bits or opcode) shows that. From then on only the end of what has
    arrived is looked at: the client's close frame is the last thing it sends. Bytes that
    merely look like one end the wait early, which is no worse than not waiting.
    """

    def __init__(self) -> None:
        self._head = b""
        self._skip = 0
        self.lost = False
        self._tail = b""

    def feed(self, data: bytes) -> bool:
        """Whether a close frame starts in what has arrived so far."""
        if self.lost:
            self._tail = (self._tail + data)[-_MAX_CLOSE_FRAME:]
            return _ends_with_close_frame(self._tail)
        view = memoryview(data)
        while view and not self.lost:
            if self._skip:
                taken = min(self._skip, len(view))
                self._skip -= taken
                view = view[taken:]
                continue
            head = self._head + bytes(view[:14])
            first, second = (head[0], head[1]) if len(head) >= 2 else (0x80, 0x80)
            if first & 0x70 or first & 0x0F not in _CLIENT_OPCODES or not second & 0x80:
                self.lost = True
                return self.feed(bytes(view))
            size_bytes = {126: 2, 127: 8}.get(second & 0x7F, 0)
            header = 2 + size_bytes + 4
            if len(head) < header:
                self._head = head
                return False
            if first & 0x0F == 0x8:
                return True
            size = int.from_bytes(head[2:2 + size_bytes]) if size_bytes else second & 0x7F
            view = view[header - len(self._head):]
            self._head = b""
            self._skip = size
        return False


async def linger(sock: socket.socket, timeout: float) -> CloseAck:
    """Read what the client still sends until its close frame, then close the connection.

    Closing a socket with unread bytes, or receiving bytes after closing it, makes the kernel
    send a reset; read to the client's close frame first and the connection ends with a FIN.
    What the client sent after the server's close frame is discarded, as RFC 6455 allows.
    """
    loop = asyncio.get_running_loop()
    frames = _ClientFrames()
    with sock:
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    data = await loop.sock_recv(sock, 65536)
                    if not data:
                        return "eof"
                    if frames.feed(data):
                        return "frame"
        except TimeoutError:
            return "timeout"
        except OSError:
            return "reset"
