"""The benchmark run: phases, interleaved rounds and what is recorded for each."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import load
from bench.nginx import Nginx, available
from bench.servers import SERVERS, SERVICE_ON, TARGETS, Running, Target
from service.limits import connections_for
from service.settings import Settings
from testkit.stats import percentile


@dataclass(frozen=True)
class Mode:
    name: str
    rounds: int
    latency_messages: int
    throughput_connections: int
    throughput_seconds: float
    throughput_max_messages: int
    handshakes: int
    handshake_seconds: float
    hold_levels: tuple[int, ...]
    hold_interval: float
    hold_seconds: float


MODES: dict[str, Mode] = {
    "tiny": Mode("tiny", 1, 200, 5, 0.5, 2_000, 30, 1.0, (20,), 0.5, 1.3),
    "quick": Mode("quick", 2, 1_000, 100, 2.0, 400_000, 300, 2.0, (1_000,), 2.0, 5.0),
    # 19,500: as near 20,000 as this machine's hard limit of 20,000 descriptors per process
    # allows (the client process holds one socket per connection, the server another).
    "full": Mode("full", 3, 3_000, 100, 4.0, 1_000_000, 1_000, 4.0,
                 (1_000, 5_000, 10_000, 15_000, 19_500), 4.0, 10.0),
}
SCALING_SERVERS = ("service", "starlette", "granian-asgi", "granian-rsgi", "picows",
                   "service-uvicorn", "asgi-reply", "asgi-reply-uvicorn")
# Held once more at the mode's first level with clients that offer permessage-deflate
# (listed as "NAME +deflate"): the memory a negotiated compressor costs per idle connection.
# Granian does not negotiate it; uvicorn does.
DEFLATE_SCALING = ("service-uvicorn",)


def _cores() -> tuple[int | None, int | None]:
    """(server core, load-generator core); None when there is only one core to use."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return cores[0], cores[1]


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class CpuWindow(load.WindowHooks):
    """Server CPU seconds spent between ``start`` and ``stop``."""

    def __init__(self, server: Running) -> None:
        self.server = server
        self.cpu = 0.0
        self.wall = 0.0
        self.rss = 0
        self._c0 = 0.0
        self._t0 = 0.0

    def start(self) -> None:
        self._c0, self._t0 = self.server.cpu_seconds(), time.perf_counter()

    def stop(self) -> None:
        self.cpu = self.server.cpu_seconds() - self._c0
        self.wall = time.perf_counter() - self._t0
        self.rss = self.server.rss_bytes()


def _echo_metrics(prefix: str, res: load.EchoResult, window: CpuWindow | None) -> dict[str, float]:
    rate = res.messages / res.seconds if res.seconds else float("nan")
    out = {
        f"{prefix}_p50_us": percentile(res.rtt_us, 50),
        f"{prefix}_p99_us": percentile(res.rtt_us, 99),
        f"{prefix}_msgs_per_s": rate,
        f"{prefix}_client_cpu_pct": 100 * res.client_cpu_s / res.seconds if res.seconds else 0,
        f"{prefix}_errors": float(res.errors),
    }
    if window is not None and res.messages:
        out[f"{prefix}_server_cpu_us_per_msg"] = 1e6 * window.cpu / res.messages
        out[f"{prefix}_server_cpu_pct"] = 100 * window.cpu / window.wall if window.wall else 0
    return out


async def _echo_figures(prefix: str, url: str, server: Running, mode: Mode) -> dict[str, float]:
    """Figure 1a's round trip (``{prefix}lat1``) and 1b's 100 connections (``{prefix}c100``)."""
    m: dict[str, float] = {}
    res = await load.echo_load(url, 1, 60.0, mode.latency_messages, warmup=0.2)
    m.update(_echo_metrics(f"{prefix}lat1", res, None))
    window = CpuWindow(server)
    res = await load.echo_load(url, mode.throughput_connections, mode.throughput_seconds,
                               mode.throughput_max_messages, hooks=window)
    m.update(_echo_metrics(f"{prefix}c100", res, window))
    return m


async def measure_target(target: Target, server: Running, proxy: Nginx | None,
                         mode: Mode) -> dict[str, float]:
    """One round for one target: every figure that is measured in rounds."""
    url = server.url(target.path)
    m = await _echo_figures("", url, server, mode)
    if proxy is not None:
        m.update(await _echo_figures("nginx_", proxy.url(target.path), server, mode))
    window = CpuWindow(server)
    hs = await load.handshake_load(url, mode.handshakes, mode.handshake_seconds, hooks=window)
    m["hs_per_s"] = hs.handshakes / hs.seconds if hs.seconds else float("nan")
    m["hs_errors"] = float(hs.errors)
    m["hs_client_cpu_pct"] = 100 * hs.client_cpu_s / hs.seconds if hs.seconds else 0
    if hs.handshakes:
        m["hs_server_cpu_us"] = 1e6 * window.cpu / hs.handshakes
    return m


async def phase_rounds(mode: Mode, targets: list[Target], *, server_core: int | None,
                       use_nginx: bool, log_dir: Path, log: Any) -> tuple[
                           dict[str, list[dict[str, float]]], dict[str, str]]:
    """Figures 1, 3 and 4: all servers up at once, targets interleaved in rotated order."""
    samples: dict[str, list[dict[str, float]]] = {t.key: [] for t in targets}
    notes: dict[str, str] = {}
    running: dict[str, Running] = {}
    proxies: dict[str, Nginx] = {}
    try:
        for name in dict.fromkeys(t.server for t in targets):
            running[name] = Running(SERVERS[name], server_core, 30.0, log_dir)
            if use_nginx:
                proxies[name] = Nginx(running[name].port, server_core)
                notes["nginx_site"] = proxies[name].source
        for rnd in range(mode.rounds):
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            if rnd % 2:
                order.reverse()
            for target in order:
                log(f"round {rnd + 1}/{mode.rounds}: {target.key}")
                sample = await measure_target(target, running[target.server],
                                              proxies.get(target.server), mode)
                samples[target.key].append(sample)
    finally:
        for proxy in proxies.values():
            proxy.stop()
        for server in running.values():
            server.stop()
    return samples, notes


async def _hold_level(server: Running, count: int, mode: Mode, rss0: int, *,
                      offer_deflate: bool = False) -> dict[str, float]:
    """One figure-2 row: ``count`` connections held on /ws/health with heartbeats on."""
    window = CpuWindow(server)
    hold = await load.hold_load(server.url("/ws/health"), count, mode.hold_seconds,
                                mode.hold_interval, hooks=window, offer_deflate=offer_deflate)
    rss1 = window.rss  # read at the end of the hold, all connections open
    return {
        "connections": float(count), "opened": float(hold.opened),
        "connect_failures": float(hold.connect_failures),
        "open_per_s": hold.opened / hold.open_seconds if hold.open_seconds else 0,
        "drops": float(hold.drops), "heartbeats": float(hold.heartbeats),
        "lateness_p50_ms": percentile(hold.lateness_ms, 50),
        "lateness_p99_ms": percentile(hold.lateness_ms, 99),
        "rss_mib": rss1 / 2**20,
        "rss_per_conn_kib": (rss1 - rss0) / 1024 / max(1, hold.opened),
        "server_cpu_pct": 100 * window.cpu / window.wall if window.wall else 0,
        "client_cpu_pct": 100 * hold.client_cpu_s / hold.hold_seconds,
        "deflate_offered": float(offer_deflate), "deflate_negotiated": float(hold.deflate),
    }


def _levels_for(name: str, levels: list[int], nofile: int) -> list[int]:
    """The service holds what its descriptor rule allows (``service.limits``, the defaults'
    ``HTTP_MAX_CONNECTIONS``) and refuses the rest with 503: levels above that are measured at
    that bound instead, the most its deployed defaults hold here."""
    if name not in SERVICE_ON:
        return levels
    cap = connections_for(nofile, Settings().http_max_connections)
    kept = [n for n in levels if n <= cap]
    return [*kept, cap] if len(kept) < len(levels) else kept


async def phase_scaling(mode: Mode, servers: list[str], *, server_core: int | None,
                        nofile: int, log_dir: Path, log: Any) -> dict[str, list[dict[str, float]]]:
    """Figure 2: one server at a time, N connections held on /ws/health with heartbeats on."""
    levels = [n for n in mode.hold_levels if n + 200 <= nofile]
    runs = [(name, False, _levels_for(name, levels, nofile)) for name in servers]
    runs += [(name, True, levels[:1]) for name in servers if name in DEFLATE_SCALING]
    results: dict[str, list[dict[str, float]]] = {}
    for name, deflate, counts in runs:
        key = f"{name} +deflate" if deflate else name
        server = Running(SERVERS[name], server_core, mode.hold_interval, log_dir)
        rows: list[dict[str, float]] = []
        await asyncio.sleep(0.5)
        # The idle server's RSS: memory kept after a level is closed must not hide the next
        # level's growth, so every level is measured against this one baseline.
        rss0 = server.rss_bytes()
        try:
            for count in counts:
                log(f"scaling: {key} holding {count} connections")
                await asyncio.sleep(0.5)
                rows.append(await _hold_level(server, count, mode, rss0, offer_deflate=deflate))
                await asyncio.sleep(1.0)  # let the server finish closing before the next level
        finally:
            server.stop()
        results[key] = rows
    return results


def _commit() -> str:
    """The code measured: HEAD's short hash, ``+changes`` when the tree differs from it."""
    root = Path(__file__).resolve().parent.parent
    git = shutil.which("git") or "git"
    try:
        head = subprocess.run([git, "rev-parse", "--short", "HEAD"], cwd=root,  # noqa: S603
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run([git, "status", "--porcelain", "--untracked-files=no"],  # noqa: S603
                               cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty.strip() else "")


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("granian", "litestar", "msgspec", "starlette", "uvicorn", "websockets",
                 "picows", "psutil"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "missing"
    nginx = ""
    with contextlib.suppress(OSError):
        out = subprocess.run(["/usr/sbin/nginx", "-v"], capture_output=True, text=True,
                             check=False)
        nginx = out.stderr.strip().removeprefix("nginx version: ")
    versions["nginx"] = nginx or "missing"
    return {
        "commit": _commit(),
        "nproc": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release(),
        "python": platform.python_version(), "implementation": sys.implementation.name,
        "packages": versions, "loadavg_start": list(os.getloadavg()),
    }


async def run(mode: Mode, *, targets: list[Target] | None = None, use_nginx: bool = True,
              scaling: bool = True, out_dir: Path, log: Any = print) -> dict[str, Any]:
    targets = list(targets or TARGETS)
    server_core, client_core = _cores()
    if client_core is not None:
        os.sched_setaffinity(0, {client_core})
    nofile = raise_nofile()
    use_nginx = use_nginx and available()
    log_dir = out_dir / "logs"
    started = time.time()
    info = machine_info()
    samples, notes = await phase_rounds(mode, targets, server_core=server_core,
                                           use_nginx=use_nginx, log_dir=log_dir, log=log)
    scale: dict[str, list[dict[str, float]]] = {}
    if scaling:
        servers = [n for n in SCALING_SERVERS if any(t.server == n for t in targets)]
        scale = await phase_scaling(mode, servers, server_core=server_core,
                                    nofile=nofile, log_dir=log_dir, log=log)
    info["loadavg_end"] = list(os.getloadavg())
    return {
        "mode": mode.__dict__, "started": started, "duration_s": time.time() - started,
        "machine": info, "server_core": server_core, "loadgen_core": client_core,
        "nofile_limit": nofile, "nginx": use_nginx, "notes": notes,
        # The clients offer no extension, except in Figure 2's "+deflate" rows.
        "client": {"library": "picows", "deflate_offered": False,
                   "deflate_offered_in": [k for k in scale if k.endswith(" +deflate")]},
        "targets": {t.key: {"server": t.server, "path": t.path, "label": t.label}
                    for t in targets},
        "rounds": samples, "scaling": scale,
    }
