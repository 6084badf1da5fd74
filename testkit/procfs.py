"""Readings of a process from /proc (memory, file descriptors, limits) and the fd limit."""

from __future__ import annotations

import contextlib
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


def socket_inodes(pid: int) -> set[str]:
    """The socket inodes ``pid`` holds descriptors of (``socket:[N]`` -> ``N``)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed while listing
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


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


_TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
               "0A": "LISTEN", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "09": "LAST_ACK"}


def describe_sockets(pid: int, inodes: set[str]) -> list[str]:
    """What each of those sockets is, from /proc/PID/net/tcp{,6} (IPv4 shown as
    ``addr:port``): its state and both ends, so a leaked socket's failure says whose it is."""
    found: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    local, remote = (_endpoint(f) for f in fields[1:3])
                    state = _TCP_STATES.get(fields[3], fields[3])
                    found[fields[9]] = f"{state} {local} -> {remote}"
    return [found.get(inode, f"socket {inode} (not TCP)") for inode in sorted(inodes)]


def _endpoint(hex_address: str) -> str:
    address, port = hex_address.split(":")
    ip = ".".join(str(b) for b in bytes.fromhex(address)[::-1]) if len(address) == 8 else address
    return f"{ip}:{int(port, 16)}"


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
