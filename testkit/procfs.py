"""Readings of a process from /proc (memory, file descriptors, limits) and the fd limit."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from pathlib import Path


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc/PID/status (VmRSS, kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_count(pid: int) -> int:
    """The descriptors of ``pid`` that are sockets: what a connection holds, so what a leak
    leaves. (Its other descriptors are the runtime's: epoll and eventfd instances that Granian
    and asyncio create lazily as threads start under load, which is not a leak.)"""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except FileNotFoundError:  # closed while listing
            continue
    return count


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
