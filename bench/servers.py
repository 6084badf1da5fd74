"""The servers under test: how to start each one pinned to a core, and what it costs.

CPU and RSS are read from the server's own process tree with psutil, so they hold when the
machine is noisy (a colleague's containers, the load generator on the other core).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from testkit.ports import free_port, wait_for_port
from testkit.processes import pinned, stop

VENV_BIN = Path(sys.executable).parent
# The service's servers: each one is ``ws-service`` with this ``WS_SERVER``.
SERVICE_ON = {"service": "granian", "service-uvicorn": "uvicorn", "kit-no-session": "granian"}
# ... and this WS_APP, when not the service itself.
APP_OF = {"kit-no-session": "bench.peers.kit_raw:create_app"}


@dataclass(frozen=True)
class Server:
    """One server process kind; several targets (endpoints) may share it."""

    name: str
    label: str

    def argv(self, port: int, interval: float) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        py = str(VENV_BIN / "python")
        if self.name in SERVICE_ON:
            env["WS_SERVER"] = SERVICE_ON[self.name]
            env["WS_APP"] = APP_OF.get(self.name, "service.app:create_app")
            ping_timeout = max(0.1, interval / 3)
            env.update(PORT=str(port), HOST="127.0.0.1", LOG_LEVEL="warning",
                       WS_PING_INTERVAL=f"{interval:g}", WS_PING_TIMEOUT=f"{ping_timeout:g}")
            ws_service = VENV_BIN / "ws-service"
            if ws_service.exists():
                return [str(ws_service)], env
            return [py, "-m", "service"], env
        module = {
            "starlette": ["bench.peers.starlette_app"],
            "granian-asgi": ["bench.peers.granian_raw", "--interface", "asgi"],
            "granian-rsgi": ["bench.peers.granian_raw", "--interface", "rsgi"],
            "picows": ["bench.peers.picows_server"],
            "litestar-min": ["bench.peers.litestar_min"],
            "asgi-reply": ["bench.peers.asgi_reply"],
            "asgi-reply-uvicorn": ["bench.peers.asgi_reply", "--server", "uvicorn"],
        }[self.name]
        return [py, "-m", module[0], *module[1:], "--port", str(port),
                "--ping-interval", f"{interval:g}"], env


SERVERS: dict[str, Server] = {
    s.name: s for s in (
        Server("service", "this service (Litestar on embedded Granian, ASGI)"),
        Server("starlette", "same contract on Starlette + uvicorn"),
        Server("granian-asgi", "raw ASGI echo on embedded Granian"),
        Server("granian-rsgi", "raw RSGI echo on embedded Granian"),
        Server("picows", "picows echo server"),
        Server("litestar-min", "minimal Litestar @websocket loop on embedded Granian"),
        Server("asgi-reply", "raw ASGI on embedded Granian, the service's /ws reply"),
        Server("service-uvicorn", "this service on uvicorn (WS_SERVER=uvicorn, websockets-sansio)"),
        Server("kit-no-session",
               "the service's app on embedded Granian with a bare /ws reply loop, no session"),
        Server("asgi-reply-uvicorn",
               "raw ASGI on uvicorn (websockets-sansio), the service's /ws reply"),
    )
}


@dataclass(frozen=True)
class Target:
    """What a load is aimed at: a server and one of its endpoints."""

    key: str
    server: str
    path: str
    label: str


TARGETS: tuple[Target, ...] = (
    Target("service /ws", "service", "/ws", "this service, /ws"),
    Target("service /ws/echo", "service", "/ws/echo", "this service, /ws/echo"),
    Target("starlette /ws", "starlette", "/ws", "Starlette + uvicorn, same /ws contract"),
    Target("granian-asgi", "granian-asgi", "/ws", "raw Granian ASGI echo"),
    Target("granian-rsgi", "granian-rsgi", "/ws", "raw Granian RSGI echo"),
    Target("picows", "picows", "/ws", "picows echo"),
    Target("litestar-min", "litestar-min", "/ws",
           "minimal Litestar @websocket loop, same /ws reply"),
    Target("asgi-reply", "asgi-reply", "/ws", "raw ASGI on embedded Granian, same /ws reply"),
    Target("kit-no-session", "kit-no-session", "/ws/raw",
           "the service's app, /ws's reply without the session"),
    Target("service-uvicorn /ws", "service-uvicorn", "/ws", "this service on uvicorn, /ws"),
    Target("asgi-reply-uvicorn", "asgi-reply-uvicorn", "/ws",
           "raw ASGI on uvicorn (websockets-sansio), same /ws reply"),
)
BASELINE = "service /ws"
# The floors: peers that send the service's /ws reply bytes with nothing around them, each on
# the server of the service target it is the floor of (peer: that target). The report gives
# that target's server CPU (per message, per handshake) as a multiple of each.
FLOORS: dict[str, str] = {
    "litestar-min": "service /ws",
    "asgi-reply": "service /ws",
    "kit-no-session": "service /ws",  # what the session alone costs
    "asgi-reply-uvicorn": "service-uvicorn /ws",
}


class Running:
    """A started server: its port, process tree CPU time and RSS."""

    def __init__(self, server: Server, core: int | None, interval: float, log_dir: Path) -> None:
        self.server = server
        self.port = free_port()
        argv, env = server.argv(self.port, interval)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{server.name}.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - argv built from constants
                pinned(argv, core), env=env, stdout=log, stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parent.parent,
            )
        wait_for_port(self.port, self.proc, self.log_path, timeout=30)
        self.ps = psutil.Process(self.proc.pid)

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """CPU time of the server's process tree: its own at nanosecond resolution.

        psutil reads ``/proc/PID/stat``, in clock ticks (10 ms at ``HZ=100``): a window of a
        few hundred handshakes holds only tens of ticks, so a per-handshake figure would move
        by 5% on one tick. The process's CPU-time clock (``clock_getcpuclockid``; Linux encodes
        it from the pid) counts every thread, live or exited, in nanoseconds. Child processes,
        if any, and systems without that clock fall back to psutil.
        """
        tree = self._tree()
        if not tree:
            return 0.0
        own = _process_cpu_clock(self.proc.pid)
        total = 0.0
        for p in tree[1:] if own is not None else tree:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total + (own or 0.0)

    def rss_bytes(self) -> int:
        total = 0
        for p in self._tree():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def stop(self) -> None:
        stop(self.proc, timeout=10)


def _process_cpu_clock(pid: int) -> float | None:
    """``clock_gettime`` on the process-wide CPU clock of ``pid`` (Linux), None if unreadable."""
    if not sys.platform.startswith("linux"):
        return None
    clock = ((~pid) << 3) | 2  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    try:
        return time.clock_gettime(clock)
    except OSError:
        return None
