"""Release the TCP connection of a peer that stopped reading.

Granian has no write timeout: when a peer stops reading, the connection's Rust task waits on
the full socket for as long as the peer keeps it open, even after the ASGI app has returned
(docs/design.md). The socket stays ESTABLISHED, with megabytes in the kernel's buffers, outside
every count the service keeps. ASGI gives the app no handle on the socket, but the process owns
its descriptor: ``shutdown(SHUT_RDWR)`` on it fails Granian's pending write at once, so Granian
drops the connection and closes the descriptor itself. Linux only (``/proc/self/fd``); elsewhere
it does nothing and says so.
"""

from __future__ import annotations

import contextlib
import os
import socket

_FD_DIR = "/proc/self/fd"


def _address(value: object) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]).lower(), int(value[1])
    return None


def _same_host(a: str, b: str) -> bool:
    """127.0.0.1 and ::ffff:127.0.0.1 are one peer on a dual-stack socket."""
    return a.removeprefix("::ffff:") == b.removeprefix("::ffff:")


def shutdown_connection(local_port: int, peer: tuple[str, int | str]) -> str:
    """Shut down this process's TCP socket from ``local_port`` to ``peer``.

    Returns ``"shut_down"``, ``"gone"`` (Granian had closed it already) or ``"unsupported"``.

    Matching both ends is exact: a live TCP connection is the only one with that pair, so a
    descriptor reused meanwhile cannot be mistaken for it. Costs one ``dup`` per descriptor of
    the process, paid only when a peer is dropped.
    """
    try:
        names = os.listdir(_FD_DIR)
    except OSError:
        return "unsupported"
    host, port = str(peer[0]).lower(), int(peer[1])
    for name in names:
        try:
            if not os.readlink(f"{_FD_DIR}/{name}").startswith("socket:"):
                continue
            dup = os.dup(int(name))
        except (OSError, ValueError):
            continue  # closed meanwhile, or the listing's own descriptor
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        with sock:
            if sock.type != socket.SOCK_STREAM:
                continue
            try:
                local = _address(sock.getsockname())
                remote = _address(sock.getpeername())
            except OSError:
                continue  # a listener or an unconnected socket
            if (
                local is not None and remote is not None and local[1] == local_port
                and remote[1] == port and _same_host(remote[0], host)
            ):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                return "shut_down"
    return "gone"
