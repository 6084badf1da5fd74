#!/usr/bin/env python3
"""A fleet of reconnecting WebSocket clients for rolling-restart checks (loopback URLs only).

  ws_fleet.py URL --clients 200 --origin ORIGIN --status-file PATH --report PATH
              --stop-file PATH [--max-seconds 600] [--jitter 1.0] [--max-backoff 5]
              [--batch 50] [--open-timeout 10] [--source-addresses N]
              [--first-source 127.0.0.2]

Keeps ``--clients`` connections to URL (a ``/ws/health`` or ``/ws/echo`` URL, through nginx in
real use) and records what they see while backends restart behind it. Each client connects
with the Origin header, reads the greeting (``health_status`` on /ws/health, ``welcome`` on
/ws/echo; /ws has none: there the handshake counts as the greeting), answers every
``{"type":"heartbeat","ping_number":n}`` with ``{"type":"pong","ping_number":n}`` and, on any
close, records its code and reason and reconnects after ``uniform(0, --jitter)`` seconds;
failed handshakes (the HTTP status when the server rejected it, else the exception's kind)
are recorded and retried with ``ws-smoke watch``'s full-jitter back-off: after n failures in a
row ``uniform(0, min(--max-backoff, jitter * 2**n))``, ``--max-backoff`` 5 s by default. The
**gap** of a close is the time from the close to the client's next greeting. The first
clients are opened ``--batch`` at a time (each batch's attempts finish before the next
starts), not all at once. ``--source-addresses N`` spreads the clients round-robin over N
loopback source addresses from ``--first-source`` (127.0.0.2) on: client i binds the (i mod
N)-th; to nginx they are N distinct client addresses (0, the default: the kernel's choice).

``--status-file`` is rewritten atomically (temp file + rename) when the figures change, at most
every 0.2 s: ``{"connected": n, "clients": N, "closes": k, "handshake_failures": m}`` - so a
caller can wait for "all connected" (again, after a restart: ``closes`` tells them apart).

The fleet stops when ``--stop-file`` appears (polled every 0.2 s), after ``--max-seconds``, or
on SIGTERM/SIGINT: it closes every connection with 1000 (those closes are not counted) and
writes ``--report``::

  {clients, url, elapsed_s, stopped_by, connects, closes_total,
   closes_by_code: {"1001": n, ...}, closes: [first 50: {client, code, reason, age_s, at_s}],
   handshake_failures: {"503": n, "ConnectionRefusedError": m, ...},
   handshake_failures_total, gaps: {count, max_s, p50_s, p99_s}, max_gap_s,
   still_connected_at_stop, open_gaps_s: [clients still down at stop: seconds since close],
   first_connected_s, heartbeats_answered}

Exit 0 once the report is written (the caller asserts on it); 2 on a usage error, such as a
URL whose host is not loopback (127.0.0.0/8, ::1, localhost): this script only ever loads
the machine it runs on.

Runs with the venv's python (the Ansible controller's): stdlib + ``websockets``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from smoke.stats import percentile
from smoke.watch import Backoff

MAX_BACKOFF = 5.0
STATUS_EVERY = 0.2
STOP_POLL = 0.2
FIRST_CLOSES = 50
MAX_SOURCE_ADDRESSES = 250
GREETINGS = {"/ws/health": "health_status", "/ws/echo": "welcome"}


class UsageError(ValueError):
    """A command line this script refuses: exit 2."""


def loopback_url(url: str) -> str:
    """``url`` if it is a ws:// or wss:// URL to a loopback host, else UsageError."""
    parts = urlsplit(url)
    if parts.scheme not in {"ws", "wss"}:
        raise UsageError(f"refusing URL {url!r}: the scheme must be ws:// or wss://")
    host = (parts.hostname or "").lower()
    if host != "localhost":
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address is None or not address.is_loopback:
            raise UsageError(
                f"refusing URL {url!r}: host {host or '(none)'!r} is not loopback "
                "(127.0.0.0/8, ::1, localhost); load and restart tests only ever target "
                "this machine"
            )
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise UsageError(f"bad port in URL {url!r}: {exc}") from None
    return url


# -- what the fleet saw ------------------------------------------------------------------------


@dataclass
class Close:
    client: int
    code: int
    reason: str
    age_s: float
    at_s: float


@dataclass
class Fleet:
    url: str
    clients: int
    origin: str | None
    jitter: float
    open_timeout: float = 10.0
    max_backoff: float = MAX_BACKOFF
    source_addresses: int = 0
    first_source: str = "127.0.0.2"
    started: float = field(default_factory=time.monotonic)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    stopped_by: str = ""
    connected: set[int] = field(default_factory=set)
    sockets: dict[int, ClientConnection] = field(default_factory=dict)
    down_since: dict[int, float] = field(default_factory=dict)
    """Clients between a close and their next greeting: when the close happened."""
    connects: int = 0
    closes: list[Close] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    gaps: list[float] = field(default_factory=list)
    heartbeats_answered: int = 0
    first_connected_s: float | None = None
    still_connected_at_stop: int = 0
    open_gaps_s: list[float] = field(default_factory=list)

    @property
    def greeting(self) -> str | None:
        path = urlsplit(self.url).path.rstrip("/")
        return next((t for p, t in GREETINGS.items() if path.endswith(p)), None)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def status(self) -> dict[str, int]:
        return {"connected": len(self.connected), "clients": self.clients,
                "closes": len(self.closes), "handshake_failures": sum(self.failures.values())}

    # -- events ----------------------------------------------------------------------------

    def greeted(self, client: int) -> None:
        self.connects += 1
        self.connected.add(client)
        down = self.down_since.pop(client, None)
        if down is not None:
            self.gaps.append(time.monotonic() - down)
        if self.first_connected_s is None and len(self.connected) == self.clients:
            self.first_connected_s = round(self.elapsed(), 3)
            print(f"ws_fleet: all {self.clients} connected after {self.first_connected_s}s",
                  flush=True)
        self.changed.set()

    def closed(self, client: int, code: int, reason: str, opened_at: float) -> None:
        now = time.monotonic()
        self.connected.discard(client)
        self.closes.append(Close(client=client, code=code, reason=reason,
                                 age_s=round(now - opened_at, 3),
                                 at_s=round(now - self.started, 3)))
        self.down_since.setdefault(client, now)
        self.changed.set()

    def failed(self, kind: str) -> None:
        self.failures[kind] += 1
        self.changed.set()

    # -- the report ------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        gaps = sorted(self.gaps)
        return {
            "clients": self.clients,
            "url": self.url,
            "elapsed_s": round(self.elapsed(), 3),
            "stopped_by": self.stopped_by,
            "connects": self.connects,
            "closes_total": len(self.closes),
            "closes_by_code": {str(c): n for c, n in
                               sorted(Counter(c.code for c in self.closes).items())},
            "closes": [asdict(c) for c in self.closes[:FIRST_CLOSES]],
            "handshake_failures": dict(sorted(self.failures.items())),
            "handshake_failures_total": sum(self.failures.values()),
            "gaps": {"count": len(gaps), "max_s": _round(gaps[-1] if gaps else None),
                     "p50_s": _round(percentile(gaps, 50) if gaps else None),
                     "p99_s": _round(percentile(gaps, 99) if gaps else None)},
            "max_gap_s": _round(gaps[-1] if gaps else None),
            "still_connected_at_stop": self.still_connected_at_stop,
            "open_gaps_s": [round(g, 3) for g in sorted(self.open_gaps_s)],
            "first_connected_s": self.first_connected_s,
            "heartbeats_answered": self.heartbeats_answered,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def write_json_atomically(path: Path, data: object) -> None:
    """Readers see the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- one client --------------------------------------------------------------------------------


def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return str(exc.response.status_code)
    return type(exc).__name__


async def _pause(fleet: Fleet, seconds: float) -> None:
    """Wait ``seconds``, or less if the fleet stops meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(fleet.stop.wait(), seconds)


def source_address(client: int, addresses: int, first: str = "127.0.0.2") -> str | None:
    """The loopback address client ``client`` binds: ``first``, the next, ... (None: any)."""
    if addresses < 1:
        return None
    return str(ipaddress.IPv4Address(first) + client % addresses)


async def _open(fleet: Fleet, client: int) -> ClientConnection | None:
    """One handshake and greeting; None (recorded) when it failed."""
    source = source_address(client, fleet.source_addresses, fleet.first_source)
    bind: dict[str, Any] = {"local_addr": (source, 0)} if source else {}
    try:
        ws = await connect(
            fleet.url, origin=Origin(fleet.origin) if fleet.origin else None,
            open_timeout=fleet.open_timeout, close_timeout=2, ping_interval=None,
            proxy=None, user_agent_header="ws_fleet", **bind,
        )
    except Exception as exc:  # every failed handshake is a figure, never a crash
        fleet.failed(_failure_kind(exc))
        return None
    if fleet.greeting is not None:
        try:
            first = await asyncio.wait_for(ws.recv(), fleet.open_timeout)
            kind = json.loads(first).get("type") if isinstance(first, str) else None
        except Exception as exc:
            fleet.failed(f"no greeting: {_failure_kind(exc)}")
            await ws.close()
            return None
        if kind != fleet.greeting:
            fleet.failed(f"no greeting: got {kind!r}")
            await ws.close()
            return None
    return ws


async def _serve(fleet: Fleet, ws: ClientConnection) -> None:
    """Answer heartbeats until the connection closes (ConnectionClosed propagates)."""
    while True:
        raw = await ws.recv()
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        if (isinstance(message, dict) and message.get("type") == "heartbeat"
                and "ping_number" in message):
            await ws.send(json.dumps({"type": "pong", "ping_number": message["ping_number"]}))
            fleet.heartbeats_answered += 1


async def run_client(fleet: Fleet, client: int, first_attempt: asyncio.Event) -> None:
    # ws-smoke watch's back-off: uniform(0, jitter) after a close, the window doubling after
    # each failed attempt up to max_backoff.
    backoff = Backoff(max_backoff=fleet.max_backoff, jitter=fleet.jitter, window=fleet.jitter)
    while not fleet.stop.is_set():
        ws = await _open(fleet, client)
        first_attempt.set()
        if ws is None:
            await _pause(fleet, backoff.next_wait()[1])
            continue
        backoff.settle("moved")
        if fleet.stop.is_set():
            await ws.close(1000, "ws_fleet stopping")
            return
        opened_at = time.monotonic()
        fleet.sockets[client] = ws
        fleet.greeted(client)
        try:
            await _serve(fleet, ws)
        except ConnectionClosed as exc:
            fleet.sockets.pop(client, None)
            if fleet.stop.is_set() and exc.sent is not None and exc.sent.code == 1000:
                fleet.connected.discard(client)  # our own close at the stop: not counted
                return
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            reason = exc.rcvd.reason if exc.rcvd is not None else ""
            fleet.closed(client, code, reason, opened_at)
        await _pause(fleet, backoff.next_wait()[1])


# -- the fleet ---------------------------------------------------------------------------------


async def _write_status(fleet: Fleet, path: Path) -> None:
    last: dict[str, int] | None = None
    while True:
        await fleet.changed.wait()
        fleet.changed.clear()
        status = fleet.status()
        if status != last:
            write_json_atomically(path, status)
            last = status
        await asyncio.sleep(STATUS_EVERY)  # rate limit: at most one write per 0.2 s


async def _watch_stop(fleet: Fleet, stop_file: Path, max_seconds: float) -> None:
    deadline = fleet.started + max_seconds
    while not fleet.stop.is_set():
        if await asyncio.to_thread(stop_file.exists):
            fleet.stopped_by = "stop_file"
            break
        if time.monotonic() >= deadline:
            fleet.stopped_by = "max_seconds"
            break
        await _pause(fleet, min(STOP_POLL, max(0.0, deadline - time.monotonic())))
    fleet.stop.set()


async def _all_set(events: list[asyncio.Event]) -> None:
    for event in events:
        await event.wait()


async def run_fleet(fleet: Fleet, status_file: Path, stop_file: Path, max_seconds: float,
                    batch: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        fleet.stopped_by = fleet.stopped_by or "signal"
        fleet.stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    write_json_atomically(status_file, fleet.status())
    writer = asyncio.create_task(_write_status(fleet, status_file))
    stopper = asyncio.create_task(_watch_stop(fleet, stop_file, max_seconds))
    tasks: list[asyncio.Task[None]] = []
    for start in range(0, fleet.clients, batch):
        if fleet.stop.is_set():
            break
        firsts = []
        for client in range(start, min(start + batch, fleet.clients)):
            first = asyncio.Event()
            firsts.append(first)
            tasks.append(asyncio.create_task(run_client(fleet, client, first)))
        # The next batch once this one's first attempts are done (connected or failed).
        waits: list[asyncio.Task[Any]] = [asyncio.create_task(_all_set(firsts)),
                                          asyncio.create_task(fleet.stop.wait())]
        await asyncio.wait(waits, timeout=fleet.open_timeout * 2,
                           return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    await stopper
    fleet.still_connected_at_stop = len(fleet.connected)
    now = time.monotonic()
    fleet.open_gaps_s = [now - since for since in fleet.down_since.values()]
    print(f"ws_fleet: stopping ({fleet.stopped_by}), {fleet.still_connected_at_stop}/"
          f"{fleet.clients} connected", flush=True)
    await asyncio.gather(*(ws.close(1000, "ws_fleet stopping")
                           for ws in list(fleet.sockets.values())), return_exceptions=True)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    write_json_atomically(status_file, fleet.status())
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(signum)
    return fleet.report()


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _addresses(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_SOURCE_ADDRESSES:
        raise argparse.ArgumentTypeError(f"must be 0-{MAX_SOURCE_ADDRESSES}, got {text}")
    return value


def _first_source(text: str) -> str:
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {text}") from None
    if not address.is_loopback:
        raise argparse.ArgumentTypeError(f"not a loopback address (127.0.0.0/8): {text}")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ws_fleet.py",
        description="Keep N reconnecting WebSocket clients on a loopback URL; report the "
                    "closes, failed handshakes and reconnect gaps they saw.",
    )
    p.add_argument("url", help="ws:// or wss:// URL on a loopback host, e.g. "
                               "ws://127.0.0.1:8080/ws/health")
    p.add_argument("--clients", type=_count, default=200)
    p.add_argument("--origin", help="Origin header (default: none)")
    p.add_argument("--status-file", type=Path, required=True)
    p.add_argument("--report", type=Path, required=True)
    p.add_argument("--stop-file", type=Path, required=True)
    p.add_argument("--max-seconds", type=_positive, default=600.0)
    p.add_argument("--jitter", type=_positive, default=1.0,
                   help="reconnect after uniform(0, S) seconds (default 1)")
    p.add_argument("--max-backoff", type=_positive, default=MAX_BACKOFF,
                   help="longest back-off window after failed handshakes (default 5)")
    p.add_argument("--batch", type=_count, default=50,
                   help="open the first clients this many at a time (default 50)")
    p.add_argument("--open-timeout", type=_positive, default=10.0,
                   help="handshake and greeting timeout (default 10)")
    p.add_argument("--source-addresses", type=_addresses, default=0,
                   help="spread the clients over this many loopback source addresses "
                        "(default 0: the kernel's choice)")
    p.add_argument("--first-source", type=_first_source, default="127.0.0.2",
                   help="the first source address (default 127.0.0.2)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        url = loopback_url(args.url)
    except UsageError as exc:
        print(f"ws_fleet: error: {exc}", file=sys.stderr)
        return 2

    # One descriptor per client: the soft limit (often 1024) up to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(OSError, ValueError):  # an unlimited hard limit: keep soft
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def go() -> dict[str, Any]:
        fleet = Fleet(url=url, clients=args.clients, origin=args.origin, jitter=args.jitter,
                      open_timeout=args.open_timeout, max_backoff=args.max_backoff,
                      source_addresses=args.source_addresses, first_source=args.first_source)
        print(f"ws_fleet: {fleet.clients} client(s) on {url} from "
              f"{fleet.source_addresses or 'any'} source address(es)", flush=True)
        return await run_fleet(fleet, args.status_file, args.stop_file, args.max_seconds,
                               args.batch)

    report = asyncio.run(go())
    write_json_atomically(args.report, report)
    print(f"ws_fleet: report {args.report}: {report['connects']} connect(s), "
          f"closes {report['closes_by_code']}, handshake failures "
          f"{report['handshake_failures']}, max gap {report['max_gap_s']}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
