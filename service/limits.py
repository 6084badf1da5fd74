"""What one connection and one process can hold: descriptors, memory, and the cap they set.

Descriptors. Each WebSocket holds its socket, and a second descriptor while a server close
lingers (on Granian, ``service.servers.granian_tcp``: a shutdown lingers on every connection
at once); connections still sending their request hold one each, up to
``HTTP_MAX_CONNECTIONS``. The service makes sure of its own limit at start-up (it does not
count on the server raising it) and refuses handshakes with 503 past the cap that limit
allows, so a full process answers instead of failing inside the server with EMFILE. The api
role sets the unit's ``LimitNOFILE`` by the
same rule (``descriptors_needed``; ``tests/test_infra.py`` holds the two together).

Memory. What one connection may buffer is its server's (Granian: up to 64 MiB of one message,
whatever ``WS_MAX_MESSAGE_BYTES`` says; uvicorn: ``WS_MAX_MESSAGE_BYTES``, enforced while
reading), so the adapter states it (:class:`MemoryFacts`). The process's enforced
bound is its cgroup's ``memory.max`` (the api role's ``MemoryMax=``), stated at start-up.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from service.settings import Settings, SettingsError


class MemoryFacts(Protocol):
    """What a server (its adapter, :mod:`service.servers`) buffers per connection."""

    idle_connection_bytes: int
    """RSS of one idle, heartbeating WebSocket (measured: docs/benchmarks.md)."""

    def message_buffer(self, settings: Settings) -> tuple[int, str]:
        """The most one connection may buffer of a message before the app sees it, and why."""

MIB = 1024 * 1024

FDS_PER_WEBSOCKET = 2
"""Its socket, and the duplicate a lingering close holds until the client's close frame."""
FD_RESERVE = 256
"""The listener, epoll and event descriptors, the control socket, logs, a ``/proc`` scan."""
_NO_LIMIT_CAP = 1 << 20
"""What an unlimited (``RLIM_INFINITY``) hard limit is taken as: Linux's default fs.nr_open."""


def descriptors_needed(max_connections: int, http_max_connections: int) -> int:
    """THE RULE for open files: what ``max_connections`` WebSockets need at worst."""
    return FDS_PER_WEBSOCKET * max_connections + http_max_connections + FD_RESERVE


def connections_for(nofile: int, http_max_connections: int) -> int:
    """The most WebSockets ``nofile`` open files hold by the rule (the inverse)."""
    return max(0, (nofile - http_max_connections - FD_RESERVE) // FDS_PER_WEBSOCKET)


@dataclass(frozen=True)
class Capacity:
    """The WebSockets this process accepts, and the descriptor limit that allows them."""

    max_connections: int
    nofile: int
    hard: int
    configured: bool
    """True: WS_MAX_CONNECTIONS set it; False: the descriptor limit did."""

    def describe(self, settings: Settings) -> str:
        source = (f"WS_MAX_CONNECTIONS={self.max_connections}" if self.configured
                  else "WS_MAX_CONNECTIONS=0: what the open-files limit allows")
        return (
            f"capacity bound: {self.max_connections} WebSockets ({source}); open files "
            f"{self.nofile} (hard limit {self.hard}; {FDS_PER_WEBSOCKET} per WebSocket + "
            f"HTTP_MAX_CONNECTIONS={settings.http_max_connections} + {FD_RESERVE}); "
            "past it handshakes get 503 with Retry-After"
        )


def ensure_descriptors(settings: Settings) -> Capacity:
    """Raise the soft open-files limit to what the cap needs; refuse a cap it cannot hold."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = _NO_LIMIT_CAP if hard == resource.RLIM_INFINITY else hard
    http = settings.http_max_connections
    cap = settings.ws_max_connections
    if cap:
        want = descriptors_needed(cap, http)
        if want > ceiling:
            raise SettingsError(
                f"WS_MAX_CONNECTIONS={cap} needs {want} open files ({FDS_PER_WEBSOCKET} per "
                f"WebSocket + HTTP_MAX_CONNECTIONS={http} + {FD_RESERVE}) but the hard limit is "
                f"{hard}: raise it (systemd LimitNOFILE=, ulimit -Hn) or lower "
                f"WS_MAX_CONNECTIONS to {connections_for(ceiling, http)} or less"
            )
    else:
        want = ceiling
    nofile = max(soft if soft != resource.RLIM_INFINITY else ceiling, want)
    if nofile != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    derived = connections_for(nofile, http)
    if not cap and derived < 1:
        raise SettingsError(
            f"the open-files limit ({hard}) leaves no room for a WebSocket beside "
            f"HTTP_MAX_CONNECTIONS={http} + {FD_RESERVE}: raise it or lower HTTP_MAX_CONNECTIONS"
        )
    return Capacity(max_connections=cap or derived, nofile=nofile, hard=hard,
                    configured=bool(cap))


def cgroup_memory_max(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The enforced memory bound of this process's cgroup, if any.

    cgroup v2's ``memory.max``, else v1's ``memory.limit_in_bytes`` (systemd writes MemoryMax=
    there on a legacy hierarchy; a page-rounded 2**63 means none).
    """
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            where, name = root / path.lstrip("/"), "memory.max"
        elif "memory" in controllers.split(","):
            where, name = root / "memory" / path.lstrip("/"), "memory.limit_in_bytes"
        else:
            continue
        try:
            value = (where / name).read_text().strip()
        except OSError:
            continue
        if value != "max" and int(value) < 1 << 62:
            return int(value)
    return None


def memory_bound(settings: Settings, capacity: Capacity, server: MemoryFacts) -> str:
    buffered, why = server.message_buffer(settings)
    idle = server.idle_connection_bytes
    head = (
        f"memory bound: one WebSocket may hold up to {(buffered + idle) / MIB:.2f} MiB while a "
        f"message arrives ({why}), about {idle / MIB:.2f} MiB when idle: "
        f"{capacity.max_connections * idle / MIB:.0f} MiB for "
        f"{capacity.max_connections} idle WebSockets"
    )
    enforced = cgroup_memory_max()
    if enforced is not None:
        return (f"{head}; enforced: this process's cgroup memory.max is {enforced / MIB:.0f} MiB "
                "(the kernel ends this process past it, not its neighbours)")
    return (f"{head}; no cgroup memory bound: cap the process (systemd MemoryMax=, the api "
            "role's api_memory_max) and what one client address may open at the proxy")
