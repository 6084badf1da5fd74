"""The TCP connection under a Granian WebSocket, which Granian does not let the app see.

A shim for :mod:`service.servers.granian`, to delete when Granian gets a write timeout and
waits for the client's close frame (docs/conformance.md has the upstream reports). Two of
Granian's habits break the close the service promises (docs/design.md):

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
import logging
import os
import socket
from collections.abc import Generator

from websockets.exceptions import ProtocolError
from websockets.frames import Close, Frame, Opcode
from websockets.streams import StreamReader
from websockets.utils import apply_mask

from service.connection import CloseAck, peer_key

_FD_DIR = "/proc/self/fd"
_log = logging.getLogger(__name__)

Peer = tuple[str, int]


def _address(value: object) -> Peer | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return peer_key(str(value[0]), value[1])
    return None


Pair = tuple[Peer, Peer]
"""(local, remote) of one TCP connection; a local host of ``""`` matches any address."""

_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def connection_pair(server: object, client: object) -> Pair | None:
    """The pair to look for, from the ASGI scope's ``server`` and ``client``.

    ``server`` is the address the server was told to bind (Granian passes ``0.0.0.0`` when
    bound to every address, and ports as strings), so a wildcard matches any local address.
    """
    local, remote = _address(server), _address(client)
    if local is None or remote is None:
        return None
    return ("" if local[0] in _WILDCARDS else local[0], local[1]), remote


def _open(name: str) -> tuple[socket.socket, Peer, Peer] | None:
    """A duplicate of descriptor ``name`` with both its addresses, if it is a connected TCP
    socket; None otherwise (closed meanwhile, a listener, the listing's own descriptor, or
    no descriptor left)."""
    try:
        if not os.readlink(f"{_FD_DIR}/{name}").startswith("socket:"):
            return None
        fd = os.dup(int(name))
    except (OSError, ValueError):
        return None
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return None
    try:
        if sock.type == socket.SOCK_STREAM:
            local, remote = _address(sock.getsockname()), _address(sock.getpeername())
            if local is not None and remote is not None:
                return sock, local, remote
    except OSError:
        pass
    sock.close()
    return None


def _scan(wanted: set[Pair]) -> dict[Pair, int] | None:
    """A duplicate descriptor of each wanted connection.

    Matching both ends is exact: a live TCP connection is the only one with that pair, so a
    descriptor reused meanwhile cannot be mistaken for it. Granian reports a wildcard bind
    (``0.0.0.0``) as the local address, so such a pair matches on the port; two connections
    from one peer address to two local addresses would then be ambiguous, and neither is
    returned (exact or nothing). Costs one ``dup`` per descriptor of the process (about 5 us
    each), shared by every request waiting for this scan. None when
    there is no ``/proc``; out of descriptors (EMFILE), nothing is found this time.
    """
    try:
        names = os.listdir(_FD_DIR)
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    exact = {(local, remote): (local, remote) for local, remote in wanted}
    anywhere = {(local[1], remote): (local, remote) for local, remote in wanted if not local[0]}
    found: dict[Pair, int] = {}
    seen_local: dict[Pair, Peer] = {}
    ambiguous: set[Pair] = set()
    for name in names:
        if len(found) == len(wanted) and not anywhere:
            break
        opened = _open(name)
        if opened is None:
            continue
        sock, local, remote = opened
        pair = exact.get((local, remote))
        wild = pair is None
        if wild:
            pair = anywhere.get((local[1], remote))
        if pair is None or pair in ambiguous:
            sock.close()
            continue
        if pair in found:
            sock.close()
            # The same descriptor listed twice is this scan's own duplicate (same local
            # address); another local address with that port and peer is a second
            # connection the wildcard cannot tell apart: touch neither.
            if wild and seen_local.get(pair) != local:
                ambiguous.add(pair)
                os.close(found.pop(pair))
            continue
        found[pair] = sock.detach()
        seen_local[pair] = local
    return found


class Sockets:
    """Finds the descriptors of this process's connections.

    Requests made while a scan runs wait for the next one, which serves them all: a shutdown
    closing ten thousand connections costs two scans, not ten thousand.
    """

    def __init__(self) -> None:
        self.supported = True
        self._pending: dict[Pair, list[asyncio.Future[socket.socket | None]]] = {}
        self._scanner: asyncio.Task[None] | None = None

    async def hold(self, pair: Pair) -> socket.socket | None:
        """A duplicate of the descriptor of that connection; None when it is gone.

        The caller closes it. While it is open the connection outlives Granian's own close.
        """
        if not self.supported:
            return None
        future: asyncio.Future[socket.socket | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(pair, []).append(future)
        if self._scanner is None:
            self._scanner = asyncio.create_task(self._scan_while_asked())
        try:
            return await future
        except asyncio.CancelledError:
            # Cancelled after the answer came but before this task resumed (a wait_for
            # timing out at that moment): nobody else will close that duplicate, and a
            # socket dropped unclosed lives on in a garbage cycle, holding the connection.
            if future.done() and not future.cancelled() and (sock := future.result()):
                sock.close()
            raise

    async def _scan_while_asked(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                found: dict[Pair, int] | None = {}
                try:
                    found = await asyncio.to_thread(_scan, set(batch))
                except Exception:  # found nothing: the safe answer
                    _log.warning("finding connection descriptors failed", exc_info=True)
                finally:  # every asker gets an answer, even when this task is cancelled
                    if found is None:
                        self.supported = False
                    self._answer(batch, found or {})
        finally:
            self._scanner = None

    @staticmethod
    def _answer(batch: dict[Pair, list[asyncio.Future[socket.socket | None]]],
                found: dict[Pair, int]) -> None:
        for pair, futures in batch.items():
            fd = found.pop(pair, None)
            for future in futures:
                if future.done():  # the asker gave up (cancelled, timed out)
                    continue
                future.set_result(None if fd is None else socket.socket(fileno=fd))
                fd = None
            if fd is not None:  # every asker gave up meanwhile
                os.close(fd)
        for fd in found.values():  # found but not asked for: never happens, never leaks
            os.close(fd)


def shut_down(sock: socket.socket) -> None:
    """Fail Granian's pending write on this connection now; it then closes its descriptor."""
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_MAX_CLOSE_FRAME = 2 + 4 + 125
_MAX_WALKED_FRAMES = 1_000
"""Past this many frames the walk costs more than it is worth (a flood of tiny frames):
only the end of what arrives is looked at, as when the walk is lost."""


def _ends_with_close_frame(tail: bytes) -> bool:
    """Whether the bytes end with a whole masked close frame (``0x88``, ``0x80 | length``,
    a 4-byte mask, at most 125 bytes of payload) that ``websockets`` accepts (random bytes
    pass about once in 20,000 reads: an early end, no worse than not waiting)."""
    for length in range(min(len(tail) - 6, 125) + 1):
        start = len(tail) - 6 - length
        if tail[start] != 0x88 or tail[start + 1] != 0x80 | length:
            continue
        try:
            Close.parse(apply_mask(tail[start + 6:], tail[start + 2:start + 6]))
        except (ProtocolError, UnicodeDecodeError):
            continue
        return True
    return False


class _ClientFrames:
    """Walks the frames a client sends (``websockets``' parser) to the end of its close frame.

    It starts where Granian stopped reading, which is a frame boundary unless Granian had
    read part of a frame (a client sending large messages); a frame the parser refuses (no
    client may send it) shows that. From then on, and past ``_MAX_WALKED_FRAMES``, only the
    end of what has arrived is looked at: the client's close frame is the last thing it sends.
    """

    def __init__(self) -> None:
        self._reader = StreamReader()
        self._walk = self._frames()
        next(self._walk)
        self._tail = b""
        self.lost = False

    def _frames(self) -> Generator[None, None, bool]:
        for _ in range(_MAX_WALKED_FRAMES):
            frame = yield from Frame.parse(self._reader.read_exact, mask=True)
            if frame.opcode is Opcode.CLOSE:
                Close.parse(frame.data)
                return True
        return False

    def feed(self, data: bytes) -> bool:
        """Whether a whole close frame has arrived."""
        self._tail = (self._tail + data)[-_MAX_CLOSE_FRAME:]
        if self.lost:
            return _ends_with_close_frame(self._tail)
        self._reader.feed_data(data)
        try:
            next(self._walk)
        except StopIteration as done:
            if done.value:
                return True
        except (ProtocolError, UnicodeDecodeError):
            pass
        else:
            return False
        self.lost = True  # misaligned, or too many frames: from now on, the tail
        self._reader = StreamReader()
        return _ends_with_close_frame(self._tail)


LINGER_MAX_BYTES = 1 << 20
"""What a linger reads at most: a client still flooding past it is cut off (``flood``)."""


async def linger(sock: socket.socket, timeout: float) -> CloseAck:
    """Read what the client still sends until its close frame, then close the connection.

    Closing a socket with unread bytes, or receiving bytes after closing it, makes the kernel
    send a reset; read to the client's close frame first and the connection ends with a FIN.
    What the client sent after the server's close frame is discarded, as RFC 6455 allows.
    ``sock_recv`` returns without yielding while bytes are waiting, so the loop yields after
    each read and checks the deadline itself: a client that never stops sending can hold
    neither the event loop nor the connection.
    """
    loop = asyncio.get_running_loop()
    frames = _ClientFrames()
    deadline = loop.time() + timeout
    left = LINGER_MAX_BYTES
    with sock:
        sock.setblocking(False)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return "timeout"
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), remaining)
            except TimeoutError:
                return "timeout"
            except OSError:
                return "reset"
            if not data:
                return "eof"
            if frames.feed(data):
                return "frame"
            left -= len(data)
            if left <= 0:
                return "flood"
            await asyncio.sleep(0)
