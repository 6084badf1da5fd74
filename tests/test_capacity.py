"""The capacity a process takes from its open-files limit, and what happens at it.

Each service here runs under ``prlimit --nofile=SOFT:HARD``, as a unit's ``LimitNOFILE=`` or a
container's ulimit would start it: the service raises its soft limit itself, derives or checks
its cap by ``service.limits``' rule, says so at start-up, and past the cap answers 503 with
``Retry-After`` while every held WebSocket stays up, never EMFILE inside Granian.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from service.limits import FD_RESERVE, FDS_PER_WEBSOCKET, connections_for, descriptors_needed
from testkit.ports import free_port
from testkit.rawws import RawWebSocket
from testkit.service import StartService, service_env, ws_service

HTTP = 64
"""HTTP_MAX_CONNECTIONS for these runs: a small pool keeps the numbers small."""


def _limits(pid: int) -> tuple[int, int]:
    line = next(x for x in Path(f"/proc/{pid}/limits").read_text().splitlines()
                if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def _health(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
        parsed: dict[str, object] = json.loads(answer.read())
        return parsed


def _pong(ws: RawWebSocket) -> bool:
    """Read until a pong (heartbeats may come first), for at most 5 s."""
    deadline = time.monotonic() + 5
    while (frame := ws.recv_frame(deadline)) is not None:
        if frame[0] == 0x1 and json.loads(frame[1]).get("type") == "pong":
            return True
    return False


def test_rule_and_inverse_agree() -> None:
    for cap in (1, 240, 3000, 100_000):
        assert connections_for(descriptors_needed(cap, HTTP), HTTP) == cap
    assert descriptors_needed(3000, 1024) == FDS_PER_WEBSOCKET * 3000 + 1024 + FD_RESERVE


def test_cap_from_the_descriptor_limit_is_held_and_refused_past_with_503(
    start_service: StartService,
) -> None:
    hard = 800
    cap = connections_for(hard, HTTP)  # (800 - 64 - 256) / 2 = 240
    service = start_service(
        argv=["prlimit", f"--nofile=256:{hard}", ws_service()], HTTP_MAX_CONNECTIONS=str(HTTP))
    line = service.wait_for_line(r"capacity bound:")
    assert f"capacity bound: {cap} WebSockets (WS_MAX_CONNECTIONS=0" in line, line
    assert f"open files {hard} (hard limit {hard}" in line, line
    assert _limits(service.proc.pid) == (hard, hard)  # the soft limit was raised

    held: list[RawWebSocket] = []
    try:
        for _ in range(cap):
            ws = RawWebSocket(service.port)
            held.append(ws)
            assert ws.handshake("/ws") == 101
        refused = []
        for _ in range(20):
            with RawWebSocket(service.port) as extra:
                refused.append((extra.handshake("/ws"), extra.head))
        assert {status for status, _ in refused} == {503}, refused
        assert all(re.search(r"(?im)^retry-after: \d+", head) for _, head in refused), refused
        health = _health(service.port)
        assert health["connections"] == cap
        # Every held WebSocket still answers: the cap refused, nothing failed inside.
        for ws in held[:: max(1, cap // 20)]:
            ws.send(0x1, json.dumps({"type": "ping"}).encode())
            assert _pong(ws), "a held WebSocket did not answer"
    finally:
        for ws in held:
            ws.close()
    assert service.proc.poll() is None
    assert not [x for x in service.lines if "Too many open files" in x or "EMFILE" in x]


def test_a_cap_the_hard_limit_cannot_hold_stops_start_up_naming_it() -> None:
    hard = 800
    env = service_env(PORT=str(free_port()), WS_MAX_CONNECTIONS="1000",
                      HTTP_MAX_CONNECTIONS=str(HTTP))
    done = subprocess.run(["prlimit", f"--nofile=256:{hard}", ws_service()], env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert (f"WS_MAX_CONNECTIONS=1000 needs {descriptors_needed(1000, HTTP)} open files"
            in done.stderr), done.stderr
    assert f"but the hard limit is {hard}" in done.stderr, done.stderr
    assert f"lower WS_MAX_CONNECTIONS to {connections_for(hard, HTTP)} or less" in done.stderr


def test_a_configured_cap_raises_the_soft_limit_to_what_it_needs(
    start_service: StartService,
) -> None:
    cap = 300
    need = descriptors_needed(cap, HTTP)
    service = start_service(argv=["prlimit", "--nofile=256:4000", ws_service()],
                            WS_MAX_CONNECTIONS=str(cap), HTTP_MAX_CONNECTIONS=str(HTTP))
    line = service.wait_for_line(r"capacity bound:")
    assert f"capacity bound: {cap} WebSockets (WS_MAX_CONNECTIONS={cap})" in line, line
    soft, hard = _limits(service.proc.pid)
    assert hard == 4000
    assert soft >= need


# --- The memory bound stated at start-up ---------------------------------------------------

KIB = 1024
MIB = 1024 * KIB
IDLE_BYTES = {"granian": 160 * KIB, "uvicorn": 72 * KIB}
"""An idle heartbeating WebSocket's RSS as docs/benchmarks.md measured it ("Two servers":
158-161 KiB on Granian; 72 KiB on uvicorn with permessage-deflate, its worst case)."""
GRANIAN_MESSAGE_BYTES = 64 * MIB
"""README: Granian buffers up to 64 MiB of one incoming message before WS_MAX_MESSAGE_BYTES."""


def _cgroup_memory_limit(pid: int) -> int | None:
    """The memory limit of ``pid``'s own cgroup as the kernel shows it, or None for none."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:  # cgroup v2
            limit = Path("/sys/fs/cgroup", path.lstrip("/"), "memory.max")
        elif "memory" in controllers.split(","):  # cgroup v1's memory hierarchy
            limit = Path("/sys/fs/cgroup/memory", path.lstrip("/"), "memory.limit_in_bytes")
        else:
            continue
        value = limit.read_text().strip() if limit.exists() else "max"
        # "max" on v2; on v1, none is the largest page-aligned 64-bit value
        if value != "max" and int(value) < 2**63 - 4 * MIB:
            return int(value)
    return None


def _expected_memory_bound(server: str, cap: int, message_bytes: int, pid: int) -> str:
    idle = IDLE_BYTES[server]
    if server == "granian":
        buffered, why = GRANIAN_MESSAGE_BYTES, (
            f"Granian's fixed 64 MiB message limit; WS_MAX_MESSAGE_BYTES={message_bytes} "
            "applies once it has arrived")
    else:  # uvicorn's websockets refuses a message over the limit while reading it
        buffered, why = message_bytes, (
            f"uvicorn enforces WS_MAX_MESSAGE_BYTES={message_bytes} while reading (1009)")
    line = (f"memory bound: one WebSocket may hold up to {(buffered + idle) / MIB:.2f} MiB while "
            f"a message arrives ({why}), about {idle / MIB:.2f} MiB when idle: "
            f"{round(cap * idle / MIB)} MiB for {cap} idle WebSockets; ")
    limit = _cgroup_memory_limit(pid)
    if limit is None:
        return line + ("no cgroup memory bound: cap the process (systemd MemoryMax=, the api "
                       "role's api_memory_max) and what one client address may open at the proxy")
    return line + (f"enforced: this process's cgroup memory.max is {round(limit / MIB)} MiB (the "
                   "kernel ends this process past it, not its neighbours)")


@pytest.mark.server("granian", "uvicorn")
@pytest.mark.parametrize(("configured", "message_bytes"), [
    (300, 1024),
    (3000, 16 * MIB),
    (0, 65536),  # the cap the open-files limit allows: 240 at 800 open files (see above)
])
def test_start_up_states_the_memory_bound_of_its_capacity(
    start_service: StartService, ws_server: str, configured: int, message_bytes: int,
) -> None:
    """README: at start-up the service logs its capacity bound and its memory bound; on Granian
    one connection may buffer 64 MiB of a message whatever WS_MAX_MESSAGE_BYTES says."""
    hard = 8000 if configured else 800
    cap = configured or connections_for(hard, HTTP)
    service = start_service(
        argv=["prlimit", f"--nofile=256:{hard}", ws_service()],
        WS_MAX_CONNECTIONS=str(configured), WS_MAX_MESSAGE_BYTES=str(message_bytes),
        HTTP_MAX_CONNECTIONS=str(HTTP))
    capacity = service.wait_for_line(r"capacity bound:")
    assert f"capacity bound: {cap} WebSockets" in capacity, capacity
    line = service.wait_for_line(r"memory bound:")
    stated = line[line.index("memory bound:"):]
    assert stated == _expected_memory_bound(ws_server, cap, message_bytes, service.proc.pid)
