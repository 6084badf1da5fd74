"""Building blocks of the reliability cases: metrics, nginx, line logs and load clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests import nginx_site

REPO = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
LOOPBACK = "127.0.0.1"

FIGURES = REPO / "reports" / "reliability-figures.jsonl"


def report(case: str, **figures: Any) -> None:
    """Print one ``RELIABILITY {json}`` line of figures and append it to reports/ (gitignored)."""
    line = json.dumps({"case": case, **figures}, sort_keys=True)
    print(f"RELIABILITY {line}", flush=True)
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a") as out:
        out.write(line + "\n")


# --- process metrics (/proc) ------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc/PID/status (VmRSS, kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_limit(pid: int) -> int:
    """The soft RLIMIT_NOFILE of ``pid`` as /proc/PID/limits shows it."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-files limit for pid {pid}")


def raise_nofile(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted``, never past the hard limit.

    Children (ws-service, nginx) inherit it. Raising the hard limit needs CAP_SYS_RESOURCE,
    which the sandbox lacks, so the hard limit is the ceiling; returns the new soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard if hard != resource.RLIM_INFINITY else max(wanted, soft)
    target = max(soft, min(wanted, ceiling))
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def mib(n: float) -> float:
    return round(n / (1024 * 1024), 1)


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` (a /proc reading, which has no event to await) for at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 < q <= 100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# --- the heartbeat / proxy timeout rule -------------------------------------------------------


def proxy_read_timeout(interval: float, timeout: float, margin: float | None = None) -> int:
    """nginx's proxy_read_timeout for a heartbeat interval, in whole seconds.

    By default the deployment's rule itself (``tests.nginx_site``). ``margin`` replaces the
    rule's margin for short CI runs, so the proxy cuts a silent connection sooner.
    """
    if margin is None:
        return nginx_site.proxy_read_timeout(interval, timeout)
    return math.ceil(interval + timeout + margin)


# --- line logs of child processes -------------------------------------------------------------


class LineLog:
    """A child process whose output lines are kept with the monotonic time they arrived."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> tuple[int, float, str]:
        """(index, arrival time, line) of the first line from ``start`` matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(start, len(self.lines)):
                    at, line = self.lines[index]
                    if regex.search(line):
                        return index, at, line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line matching {pattern!r}; output:\n{self.text()}")
                self._changed.wait(left)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def finish(self, timeout: float) -> int:
        """Wait for the process to exit by itself; kill it if it overstays ``timeout``."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"process overstayed {timeout}s:\n{self.text()}") from None
        self._reader.join(5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)


# --- nginx, configured from the deployment's role template ------------------------------------

MAIN_CONF = """\
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    # Marks which configuration generation answered (the reload case changes it).
    add_header X-Reliability-Generation {generation} always;
    include {dir}/site.conf;
}}
"""

def render_site(port: int, backend: int | list[int], read_timeout: int, interval: float,
                timeout: float, *, per_address_limits: bool = False) -> tuple[str, str]:
    """The nginx role's site file for one api host on 127.0.0.1:``backend``, and its source."""
    site = nginx_site.render_site(port, backend, interval=interval, timeout=timeout,
                                  read_timeout=read_timeout, note="tests/reliability",
                                  per_address_limits=per_address_limits)
    return site, nginx_site.SOURCE


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class NginxProxy:
    """nginx in its own folder on a free 127.0.0.1 port, in front of ``backend``."""

    folder: Path
    backend: int | list[int]
    """The port of each instance behind this nginx."""
    read_timeout: int
    interval: float
    timeout: float
    workers: int = 1
    connections: int = 4096
    port: int = field(default_factory=free_port)
    generation: int = 1
    per_address_limits: bool = False
    source: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "error.log"

    def _write(self) -> None:
        site, self.source = render_site(self.port, self.backend, self.read_timeout,
                                        self.interval, self.timeout,
                                        per_address_limits=self.per_address_limits)
        (self.folder / "site.conf").write_text(site)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        (self.folder / "nginx.conf").write_text(MAIN_CONF.format(
            workers=self.workers, nofile=nofile, dir=self.folder,
            connections=self.connections, generation=self.generation,
        ))

    def _argv(self, *extra: str) -> list[str]:
        return [NGINX, "-p", str(self.folder), "-c", str(self.folder / "nginx.conf"),
                "-e", str(self.log), *extra]

    def start(self) -> NginxProxy:
        (self.folder / "tmp").mkdir(parents=True, exist_ok=True)
        self._write()
        self.log.touch()
        check = subprocess.run(self._argv("-t"), capture_output=True, text=True, check=False)
        assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}"
        self.proc = subprocess.Popen(self._argv("-g", "daemon off;"),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.wait_log(r"start worker process \d+", 20)
        return self

    def wait_log(self, pattern: str, timeout: float, after: int = 0) -> int:
        """Wait for a line of the error log at byte offset >= ``after``; its end offset.

        nginx writes its log with O_APPEND and no other event says "workers started", so the
        file is re-read until the line is there (bounded by ``timeout``).
        """
        regex = re.compile(pattern)
        found: list[int] = []

        def seen() -> bool:
            data = self.log.read_bytes()[after:]
            for match in regex.finditer(data.decode(errors="replace")):
                found.append(after + match.end())
                return True
            return False

        assert self.proc is not None
        if not wait_until(lambda: seen() or self.proc is None or self.proc.poll() is not None,
                          timeout) or not found:
            raise AssertionError(f"nginx log has no {pattern!r}:\n{self.log.read_text()}")
        return found[0]

    def reload(self, **changes: Any) -> None:
        """Rewrite the config with ``changes``, ``nginx -s reload``, wait for the new workers."""
        for name, value in changes.items():
            setattr(self, name, value)
        mark = self.log.stat().st_size
        self._write()
        signal_run = subprocess.run(self._argv("-s", "reload"), capture_output=True, text=True,
                                    check=False)
        assert signal_run.returncode == 0, signal_run.stderr
        after = self.wait_log(r"start worker process \d+", 20, mark)
        # Old workers close their listening sockets once told to quit gracefully.
        self.wait_log(r"gracefully shutting down", 20, mark)
        del after

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(pid) for pid in children.split()]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish, then exit
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- load clients -----------------------------------------------------------------------------

_decode = msgspec.json.Decoder(dict[str, Any])


@dataclass
class LoadStats:
    """What a crowd of /ws/health clients saw."""

    interval: float
    opened: int = 0
    open_failures: Counter[str] = field(default_factory=Counter)
    heartbeats: int = 0
    gaps: list[float] = field(default_factory=list)  # seconds between heartbeats on one socket
    transit: list[float] = field(default_factory=list)  # arrival minus the server's timestamp
    pongs_sent: int = 0
    drops: Counter[int] = field(default_factory=Counter)  # close code -> count, before our close
    drop_details: list[str] = field(default_factory=list)
    min_heartbeats: int | None = None
    measuring: bool = False  # lateness is recorded once every client is open (steady state)
    # Pong-answering clients start answering (and so become subject to the server's pong
    # timeout) once the whole crowd is open: while one Python process opens thousands of
    # sockets its event loop lags by seconds, which real, separate clients would not.
    all_open: bool = False

    def lateness(self) -> list[float]:
        """How far each heartbeat came after the interval (0 when on time)."""
        return [max(0.0, gap - self.interval) for gap in self.gaps]

    def summary(self) -> dict[str, Any]:
        late = self.lateness()
        return {
            "connections": self.opened,
            "open_failures": dict(self.open_failures),
            "heartbeats": self.heartbeats,
            "pongs_sent": self.pongs_sent,
            "drops_by_code": {str(k): v for k, v in sorted(self.drops.items())},
            "lateness_p50_ms": round(percentile(late, 50) * 1000, 1),
            "lateness_p99_ms": round(percentile(late, 99) * 1000, 1),
            "lateness_max_ms": round(max(late, default=0.0) * 1000, 1),
            "max_gap_s": round(max(self.gaps, default=0.0), 3),
            "transit_p50_ms": round(percentile(self.transit, 50) * 1000, 1),
            "transit_p99_ms": round(percentile(self.transit, 99) * 1000, 1),
            "min_heartbeats_per_connection": self.min_heartbeats,
        }


async def _hold(ws: ClientConnection, stats: LoadStats, stop: asyncio.Event,
                answer_pongs: bool) -> None:
    """Read heartbeats until ``stop``; a close before that is a drop."""
    last = time.monotonic()
    beats = 0
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            receiving = asyncio.ensure_future(ws.recv())
            await asyncio.wait([receiving, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not receiving.done():
                receiving.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await receiving
                return
            try:
                data = receiving.result()
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else 1006
                stats.drops[code] += 1
                reason = closed.rcvd.reason if closed.rcvd else ""
                if len(stats.drop_details) < 20:
                    stats.drop_details.append(f"{code} {reason!r} after {beats} heartbeat(s)")
                return
            now = time.monotonic()
            message = _decode.decode(data)
            if message.get("type") != "heartbeat":
                continue
            stats.heartbeats += 1
            beats += 1
            if stats.measuring:
                stats.gaps.append(now - last)
                stats.transit.append(max(0.0, time.time() - float(message["timestamp"])))
            last = now
            if answer_pongs and stats.all_open:
                await ws.send(b'{"type":"pong","ping_number":%d}' % message["ping_number"],
                              text=True)
                stats.pongs_sent += 1
    finally:
        stopping.cancel()
        stats.min_heartbeats = beats if stats.min_heartbeats is None else min(
            stats.min_heartbeats, beats)


async def crowd(url: str, count: int, hold: float, stats: LoadStats, *,
                pong_every: int = 2, concurrency: int = 64, open_timeout: float = 30.0,
                on_held: Callable[[], None] | None = None,
                samples: Callable[[], None] | None = None,
                sample_every: float = 1.0) -> None:
    """Open ``count`` /ws/health clients, hold them ``hold`` seconds, close them with 1000.

    Every ``pong_every``-th client answers heartbeats once all are open (so the server's pong
    timeout is in play for them); the others behave like wscat. ``samples`` is called every
    ``sample_every`` seconds while held (RSS readings), ``on_held`` once all are open.
    """
    gate = asyncio.Semaphore(concurrency)
    sockets: list[ClientConnection] = []

    async def open_one() -> None:
        async with gate:
            try:
                ws = await connect(url, open_timeout=open_timeout, ping_interval=None,
                                   close_timeout=5, max_queue=64)
            except InvalidStatus as exc:
                stats.open_failures[f"http {exc.response.status_code}"] += 1
                return
            except (OSError, TimeoutError) as exc:
                stats.open_failures[type(exc).__name__] += 1
                return
            sockets.append(ws)
            stats.opened += 1

    await asyncio.gather(*(open_one() for _ in range(count)))
    stop = asyncio.Event()
    holders = [asyncio.create_task(_hold(ws, stats, stop, pong_every > 0 and i % pong_every == 0))
               for i, ws in enumerate(sockets)]
    stats.all_open = True
    if on_held is not None:
        on_held()
    held_at = time.monotonic()
    deadline = held_at + hold
    while (left := deadline - time.monotonic()) > 0:  # bounded by ``hold``
        # One interval of warm-up: heartbeats queued while the crowd was opening are not
        # steady-state lateness.
        stats.measuring = time.monotonic() - held_at >= stats.interval
        if samples is not None:
            samples()
        await asyncio.sleep(min(sample_every, left, stats.interval))  # sampling cadence
    stop.set()
    await asyncio.gather(*holders)
    closing = [asyncio.create_task(ws.close(1000, "load run over")) for ws in sockets]
    await asyncio.gather(*closing, return_exceptions=True)


async def churn(url: str, count: int, parallel: int = 16) -> Counter[str]:
    """``count`` connect / greeting / echo / close-1000 cycles on /ws/echo, ``parallel`` at once.

    Returns outcomes: ``closed 1000`` for a clean cycle, else the exception's name.
    """
    outcomes: Counter[str] = Counter()
    cycles = iter(range(count))

    async def worker() -> None:
        for n in cycles:  # shared iterator: ``count`` cycles in all
            try:
                async with connect(url, ping_interval=None, close_timeout=5,
                                   open_timeout=10) as ws:
                    async with asyncio.timeout(10):
                        await ws.recv()  # welcome
                        await ws.send(b'{"type":"churn","n":%d}' % n, text=True)
                        while _decode.decode(await ws.recv()).get("type") != "echo":
                            pass  # a heartbeat came first
                outcomes[f"closed {ws.close_code}"] += 1
            except (OSError, ConnectionClosed, TimeoutError, InvalidStatus) as exc:
                outcomes[type(exc).__name__] += 1

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return outcomes
