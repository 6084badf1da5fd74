"""Soak run: ``python -m bench.soak --connections 10000 --duration 600`` (``scripts/soak.sh``).

Starts ``--instances`` ws-service processes (2, as the api role runs on a 2-vCPU host: one
process holds what its open-files limit allows by ``service.limits``' rule, 9,360 WebSockets
under this machine's 20,000) and nginx (from the deployment's role template) on free 127.0.0.1
ports, balancing over them;
holds N /ws/health connections through nginx for ``--duration`` seconds with heartbeats every
``--interval`` and nginx's proxy_read_timeout derived from it, then runs ``--churn``
connect/close cycles, and prints the figures the CI-sized tests print: connections, drops by
close code, heartbeat lateness p50/p99, RSS and file descriptors before/after. Every phase is
bounded; exit status 0 when nothing dropped and fds/RSS came back, 1 otherwise.

It lives in ``bench/``, not ``tests/`` or ``testkit/``: like the benchmarks it is a long
measurement run by hand (about 12 minutes), never by pytest, and it reports figures; its
building blocks (processes, nginx from the role, load clients) are ``testkit``'s, shared with
the CI-sized reliability tests that assert the same outcomes in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from testkit.figures import report
from testkit.load import LoadStats, churn, crowd
from testkit.nginx import NginxProxy
from testkit.paths import VENV_BIN
from testkit.ports import free_port
from testkit.procfs import fd_count, mib, nofile_limit, raise_nofile, rss_bytes, wait_until
from testkit.service import ServiceProcess, service_env

RSS_TOLERANCE = 32 * 1024 * 1024  # see docs/reliability.md: allocator noise at 10k sockets


def _log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def soak(args: argparse.Namespace) -> int:
    limit = raise_nofile(2 * args.connections + 2000)
    if limit < args.connections + 500:
        _log(f"RLIMIT_NOFILE hard limit {limit} is too low for {args.connections} connections")
        return 2
    ports = [free_port() for _ in range(args.instances)]
    services = [ServiceProcess(
        [str(VENV_BIN / "ws-service")],
        service_env(PORT=str(port), WS_PING_INTERVAL=str(args.interval),
                    WS_PING_TIMEOUT=str(args.timeout), LOG_LEVEL="info"),
        port,
    ) for port in ports]
    folder = Path(tempfile.mkdtemp(prefix="ws-soak-"))
    # nginx as the role deploys it on this host for an api host of --connections
    # (api_max_connections): a worker per vCPU, their limits from the role's rule, per-address
    # limits on; the clients come from --sources addresses. The proxy timeout is the
    # deployment's rule (with --margin as its margin, if given).
    proxy = NginxProxy(folder / "nginx", ports, 0, args.interval, args.timeout,
                       workers=os.cpu_count() or 1, capacity=args.connections,
                       per_address_limits=True, margin=args.margin)
    try:
        for service in services:
            service.wait_for_line("ready: serving on", 30)
        pids = [service.proc.pid for service in services]
        capacities = [service.wait_for_line("capacity bound:", 5).split("capacity bound: ", 1)[1]
                      .split(" WebSockets")[0] for service in services]
        proxy.start()
        read_timeout = proxy.read_timeout
        _log(f"{len(pids)} service(s), pids {pids} on 127.0.0.1:{ports} (RLIMIT_NOFILE "
             f"{[nofile_limit(pid) for pid in pids]}, capacity {capacities}), nginx "
             f"({proxy.source}) on {proxy.url}, proxy_read_timeout {read_timeout}s")

        def fd_count_all() -> int:
            return sum(fd_count(pid) for pid in pids)

        def rss_all() -> int:
            return sum(rss_bytes(pid) for pid in pids)

        fds_before, rss_before = fd_count_all(), rss_all()
        stats = LoadStats(args.interval)
        rss: list[int] = []
        started = time.monotonic()
        opened_at: list[float] = []
        last_print = [0.0]

        def sample() -> None:
            rss.append(rss_all())
            now = time.monotonic()
            if now - last_print[0] >= args.report_every:
                last_print[0] = now
                _log(f"held {now - (opened_at[0] if opened_at else now):.0f}s: "
                     f"{stats.opened} open, {stats.heartbeats} heartbeats, "
                     f"drops {dict(stats.drops)}, service RSS {mib(rss[-1])} MiB, "
                     f"fds {fd_count_all()}")

        def held() -> None:
            opened_at.append(time.monotonic())
            _log(f"{stats.opened} connections open in {opened_at[0] - started:.1f}s "
                 f"(failures {dict(stats.open_failures)})")

        asyncio.run(asyncio.wait_for(
            crowd(f"{proxy.url}/ws/health", args.connections, args.duration, stats,
                  pong_every=args.pong_every, on_held=held, samples=sample,
                  sample_every=args.interval, sources=args.sources),
            args.duration + 600))
        wait_until(lambda: fd_count_all() <= fds_before, 30)
        fds_after_load, rss_after_load = fd_count_all(), rss_all()
        steady = rss[2:] or rss
        figures: dict[str, Any] = {
            **stats.summary(), "duration_s": args.duration, "interval_s": args.interval,
            "timeout_s": args.timeout, "proxy_read_timeout_s": read_timeout,
            "instances": len(pids), "capacity_per_instance": capacities,
            "nginx_config": proxy.source, "nginx_worker_limits": list(proxy.worker_limits),
            "client_addresses": args.sources,
            "open_s": round(opened_at[0] - started, 1) if opened_at else None,
            "rss_before_mib": mib(rss_before), "rss_steady_first_mib": mib(steady[0]),
            "rss_steady_last_mib": mib(steady[-1]), "rss_peak_mib": mib(max(rss)),
            "rss_after_close_mib": mib(rss_after_load),
            "fds_before": fds_before, "fds_after": fds_after_load,
        }
        report("soak_hold", **figures)
        ok = (stats.opened == args.connections and not stats.drops
              and fds_after_load <= fds_before
              and steady[-1] - steady[0] < RSS_TOLERANCE)
        if args.churn:
            ok = _churn_phase(ports[0], pids[0], args.churn) and ok
        print(json.dumps({"ok": ok, **figures}, indent=2), flush=True)
        return 0 if ok else 1
    finally:
        proxy.stop()
        for service in services:
            service.stop()


def _churn_phase(port: int, pid: int, cycles: int) -> bool:
    """Connect/close cycles straight to the service; True when fds and RSS came back."""
    url = f"ws://127.0.0.1:{port}/ws/echo"
    asyncio.run(churn(url, min(300, cycles), 16))  # warm-up: allocator arenas, caches
    fds0, rss0 = fd_count(pid), rss_bytes(pid)
    t0 = time.monotonic()
    outcomes = asyncio.run(asyncio.wait_for(churn(url, cycles, 16), cycles / 10 + 300))
    elapsed = time.monotonic() - t0
    wait_until(lambda: fd_count(pid) <= fds0, 30)
    fds1, rss1 = fd_count(pid), rss_bytes(pid)
    report("soak_churn", cycles=cycles, outcomes=dict(outcomes),
           duration_s=round(elapsed, 1), cycles_per_s=round(cycles / elapsed),
           fds_before=fds0, fds_after=fds1, rss_before_mib=mib(rss0), rss_after_mib=mib(rss1))
    return outcomes == {"closed 1000": cycles} and fds1 <= fds0 and rss1 - rss0 < RSS_TOLERANCE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description="hold N connections through nginx, then churn")
    p = parser
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--instances", type=int, default=2,
                   help="ws-service processes behind nginx (the api role: one per vCPU)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds to hold them")
    p.add_argument("--sources", type=int, default=64,
                   help="client addresses, 127.0.0.2 on (nginx's per-address limits: 256 each)")
    p.add_argument("--interval", type=float, default=5.0, help="WS_PING_INTERVAL")
    p.add_argument("--timeout", type=float, default=2.0, help="WS_PING_TIMEOUT")
    p.add_argument("--margin", type=float, default=None,
                   help="proxy_read_timeout margin (default: the deployment's max(5, i/2))")
    p.add_argument("--pong-every", type=int, default=4,
                   help="every Nth client answers heartbeats (0: none)")
    p.add_argument("--churn", type=int, default=20_000, help="connect/close cycles after")
    p.add_argument("--report-every", type=float, default=30.0, help="progress line period")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.duration <= 0 or args.duration > 24 * 3600:
        parser.error("--connections >= 1 and 0 < --duration <= 86400")
    if not 1 <= args.instances <= 16:
        parser.error("--instances 1-16")
    return soak(args)


if __name__ == "__main__":
    sys.exit(main())
