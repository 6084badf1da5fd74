"""A local control socket: ``status`` and ``shed N``, one line in, one JSON line out.

Why it exists: a rolling restart leaves the instance restarted last with no clients, and a new
host joins empty; least-connections balancing only places *new* connections. ``shed N`` asks N
clients to reconnect (1001), and the balancer puts them on the emptiest backend
(playbooks/rebalance.yml). A Unix socket, not an HTTP route: only the host's root and the
service's group can reach it, and nothing about it is exposed through the proxy.

    ws-kit-ctl /run/ws-kit-9000/control.sock status
    ws-kit-ctl /run/ws-kit-9000/control.sock shed 12
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys

import msgspec

from service.registry import Registry

REBALANCE_REASON = "rebalancing: reconnect"
_MAX_LINE = 128


class Status(msgspec.Struct):
    connections: int
    draining: bool


class Shed(msgspec.Struct):
    asked: int
    shed: int
    connections: int


class Failure(msgspec.Struct):
    error: str


_encode = msgspec.json.Encoder().encode


def answer(registry: Registry, line: str) -> msgspec.Struct:
    words = line.split()
    if words == ["status"]:
        return Status(connections=len(registry), draining=registry.closing)
    if len(words) == 2 and words[0] == "shed" and words[1].isdigit():
        asked = int(words[1])
        return Shed(asked=asked, shed=registry.shed(asked, REBALANCE_REASON),
                    connections=len(registry))
    return Failure(error="commands: 'status' or 'shed N' (N a whole number)")


async def serve_control(path: str, registry: Registry) -> asyncio.Server:
    """Listen on ``path`` (a stale socket file from a crash is replaced), mode 0660."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            reply = answer(registry, line[:_MAX_LINE].decode(errors="replace"))
            writer.write(_encode(reply) + b"\n")
            await writer.drain()
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, path=path)
    os.chmod(path, 0o660)
    return server


def main(argv: list[str] | None = None) -> int:
    """``ws-kit-ctl SOCKET COMMAND...``: print the service's JSON answer; exit 1 on an error."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: ws-kit-ctl SOCKET status | ws-kit-ctl SOCKET shed N", file=sys.stderr)
        return 2
    path, command = args[0], " ".join(args[1:])
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(path)
            conn.sendall(command.encode() + b"\n")
            reply = conn.makefile("rb").readline()
    except OSError as exc:
        print(f"ws-kit-ctl: cannot reach {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(reply.decode().rstrip("\n"))
    return 1 if b'"error"' in reply else 0


if __name__ == "__main__":
    sys.exit(main())
