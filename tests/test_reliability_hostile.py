"""Hostile input against real ws-service: fuzzed frames (hypothesis) and handshake abuse.

One service per server for the module (Granian and uvicorn; auth on, 4 KiB message limit, a
rate limit), driven through a raw-socket client so that invalid UTF-8, reserved opcodes and
hand-made fragments reach it.
Outcomes asserted per input kind; a healthy connection opened beside the fuzzing must keep
working after every example, and the service must never log a traceback.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from service.settings import Settings
from testkit.figures import report
from testkit.paths import VENV_BIN
from testkit.ports import free_port
from testkit.procfs import fd_count, wait_until
from testkit.rawws import BINARY, CONTINUATION, TEXT, Outcome, RawWebSocket
from testkit.service import ServiceProcess, service_env

TOKEN = "reliability-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 4096
PATHS = ["/ws/echo", "/ws/health", "/ws"]
SLOW_HANDSHAKES = 20
SERVER_HEADER_TIMEOUT = Settings().http_header_timeout  # HTTP_HEADER_TIMEOUT, left at its default


@pytest.fixture(scope="module", params=["granian", "uvicorn"])
def hostile(request: pytest.FixtureRequest) -> Iterator[ServiceProcess]:
    """The service on each server, attacked by the whole module."""
    port = free_port()
    service = ServiceProcess(
        [str(VENV_BIN / "ws-service")],
        service_env(PORT=str(port), WS_SERVER=request.param,
                    WS_PING_INTERVAL="2", WS_PING_TIMEOUT="1",
                    WS_AUTH_TOKEN=TOKEN, WS_MAX_MESSAGE_BYTES=str(LIMIT),
                    WS_RATE_LIMIT="100", WS_RATE_BURST="50"),
        port,
    )
    service.wait_for_line("ready: serving on", 20)
    yield service
    service.stop()


@pytest.fixture
def hostile_server(hostile: ServiceProcess, request: pytest.FixtureRequest) -> str:
    """The server under attack."""
    return str(request.node.callspec.params["hostile"])


@dataclass
class SlowHandshakes:
    sockets: list[socket.socket]
    opened_at: float
    baseline: int


@pytest.fixture(scope="module")
def slow_handshakes(hostile: ServiceProcess) -> Iterator[SlowHandshakes]:
    """Incomplete handshakes (headers never finished) and silent connects, opened early.

    They stay open while the module's other tests run; the last test waits for the server to
    cut them, so the 30 s header timeout mostly overlaps other work.
    """
    baseline = fd_count(hostile.proc.pid)
    sockets: list[socket.socket] = []
    for n in range(SLOW_HANDSHAKES):
        s = socket.create_connection(("127.0.0.1", hostile.port), timeout=5)
        if n % 2 == 0:
            s.sendall(b"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        sockets.append(s)
    yield SlowHandshakes(sockets, time.monotonic(), baseline)
    for s in sockets:
        s.close()


@contextlib.contextmanager
def healthy_client(service: ServiceProcess) -> Iterator[ClientConnection]:
    """A well-behaved bystander on /ws/echo, open while hostile input is sent beside it."""
    with connect(f"{service.ws}/ws/echo", additional_headers=AUTH, open_timeout=10,
                 ping_interval=None) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
        yield ws


def assert_healthy(ws: ClientConnection, n: int) -> None:
    """The bystander connection still echoes (heartbeats may arrive first)."""
    ws.send(json.dumps({"type": "bystander", "n": n}))
    deadline = time.monotonic() + 5
    while True:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if message["type"] == "echo":
            assert message["original"] == {"type": "bystander", "n": n}
            return


def open_raw(service: ServiceProcess, path: str) -> RawWebSocket:
    raw = RawWebSocket(service.port)
    assert raw.handshake(path, AUTH) == 101
    if path != "/ws":
        greeting = raw.outcome()
        assert greeting.kind == "reply"
    return raw


# --- what we send --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
wrong_types = st.fixed_dictionaries(
    {"type": st.sampled_from(["pong", "ping", "get_status", "echo", ""])
     | st.integers() | st.none() | st.lists(st.integers(), max_size=2)},
    optional={"ping_number": json_values, "data": json_values},
)


def nested(depth: int) -> str:
    return '{"type":"deep","v":' + "[" * depth + "]" * depth + "}"


@dataclass
class Input:
    kind: str
    frames: list[tuple[int, bytes, bool]]  # (opcode, payload, fin)


def _text(kind: str, text: str) -> Input:
    return Input(kind, [(TEXT, text.encode(), True)])


@st.composite
def fragmented(draw: st.DrawFn) -> Input:
    """A valid message split at arbitrary byte offsets, including inside a UTF-8 character."""
    data = json.dumps({"type": "frag", "s": draw(st.text(min_size=1, max_size=60))},
                      ensure_ascii=False).encode()
    cuts = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), min_size=1, max_size=4))))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return Input("fragmented", [(TEXT if i == 0 else CONTINUATION, piece, i == len(pieces) - 1)
                                for i, piece in enumerate(pieces)])


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Input:
    prefix = draw(st.text(max_size=20)).encode()
    bad = draw(st.sampled_from([b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82",
                                b"\xf8\x88\x80\x80\x80", b"\x80"]))
    return Input("invalid_utf8", [(TEXT, b'{"type":"x","s":"' + prefix + bad + b'"}', True)])


@st.composite
def oversized(draw: st.DrawFn) -> Input:
    size = draw(st.integers(LIMIT + 1, 4 * LIMIT))
    data = json.dumps({"type": "big", "s": "x" * size}).encode()
    if draw(st.booleans()):
        half = len(data) // 2
        return Input("oversized", [(TEXT, data[:half], False), (CONTINUATION, data[half:], True)])
    return Input("oversized", [(TEXT, data, True)])


hostile_inputs = st.one_of(
    st.text(max_size=200).map(lambda t: _text("random_text", t)),
    json_values.map(lambda v: _text("random_json", json.dumps(v))),
    wrong_types.map(lambda v: _text("wrong_types", json.dumps(v))),
    st.integers(min_value=10**30, max_value=10**300).map(
        lambda n: _text("huge_number", f'{{"type":"n","n":{n},"f":{n}e300}}')),
    # Depths msgspec decodes; deeper ones are test_deeply_nested_json_gets_an_error_reply.
    st.integers(1, 400).map(lambda d: _text("deep_nesting", nested(d))),
    invalid_utf8(),
    st.binary(max_size=100).map(lambda b: Input("binary", [(BINARY, b, True)])),
    fragmented(),
    oversized(),
)

REPLIES = {"error", "echo", "pong", "health_status"}


def check(kind: str, outcome: Outcome) -> None:
    """The outcome each kind of input may get; never a bare disconnect (1006)."""
    assert outcome.kind != "eof", f"{kind}: connection dropped without a close frame (1006)"
    if kind == "binary":
        assert (outcome.kind, outcome.code) == ("close", 1003)
    elif kind == "oversized":
        assert (outcome.kind, outcome.code) == ("close", 1009)
        assert len(outcome.reason.encode()) <= 123
    elif kind == "invalid_utf8":
        # RFC 6455 8.1: fail the connection. Granian sends a close frame without a status
        # code (the client sees 1005) instead of 1007; see docs/reliability.md.
        assert outcome.kind == "close"
        assert outcome.code in (1002, 1005, 1007)
    elif kind == "fragmented":
        assert outcome.kind == "reply"
        assert outcome.message is not None
        assert outcome.message["type"] in REPLIES
    else:
        assert outcome.kind == "reply", f"{kind}: {outcome}"
        assert outcome.message is not None
        assert outcome.message["type"] in REPLIES


def send_probe(raw: RawWebSocket, path: str, n: int) -> None:
    probe = {"type": "get_status"} if path == "/ws/health" else {"type": f"probe-{n}"}
    with contextlib.suppress(OSError):  # the server may already have closed: that is checked
        raw.send(TEXT, json.dumps(probe).encode())


def is_probe_reply(message: dict[str, object], n: int) -> bool:
    if message.get("type") == "health_status":
        return message.get("status") == "healthy"
    original = message.get("original", message.get("data"))
    return message.get("type") == "echo" and original == {"type": f"probe-{n}"}


def first_outcome_then_probe(raw: RawWebSocket, path: str, n: int) -> Outcome:
    """The reaction to the input, then proof the connection still answers a probe.

    A probe follows the input at once: a valid ``pong`` is accepted without a reply, so the
    first reaction may be the probe's own reply; everything before it must be a reply too.
    """
    send_probe(raw, path, n)
    first = raw.outcome()
    if first.kind != "reply":
        return first
    current = first
    for _ in range(3):  # at most: the input's reply, then the probe's
        assert current.kind == "reply", f"after a reply: {current}"
        assert current.message is not None
        assert current.message["type"] in REPLIES, current.message
        if is_probe_reply(current.message, n):
            return first
        current = raw.outcome()
    raise AssertionError(f"no reply to the probe after {first}")


@pytest.mark.parametrize("path", PATHS)
def test_fuzzed_frames_get_an_error_or_the_right_close(
    hostile: ServiceProcess, slow_handshakes: SlowHandshakes, path: str,
) -> None:
    examples = [0]
    outcomes: Counter[str] = Counter()

    # Derandomized: the same 120 inputs every run, so a failure in CI is the one you rerun.
    @settings(max_examples=120, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(item=hostile_inputs)
    def fuzz(item: Input) -> None:
        examples[0] += 1
        with open_raw(hostile, path) as raw:
            for opcode, payload, fin in item.frames:
                raw.send(opcode, payload, fin=fin)
            outcome = first_outcome_then_probe(raw, path, examples[0])
            outcomes[f"{item.kind} -> {outcome.label}"] += 1
            check(item.kind, outcome)
        assert_healthy(bystander, examples[0])
        assert hostile.proc.poll() is None

    with healthy_client(hostile) as bystander:
        fuzz()
    output = hostile.output()
    assert "Traceback" not in output
    assert "failed" not in output  # Session.run logs "connection ... failed" on exceptions
    report(f"fuzz {path}", examples=examples[0],
           outcomes=dict(sorted(outcomes.items())))


@pytest.mark.parametrize("path", PATHS)
def test_deeply_nested_json_gets_a_reply_not_1011(hostile: ServiceProcess, path: str) -> None:
    """Valid JSON nested 2,000 deep (4 KiB, within WS_MAX_MESSAGE_BYTES) must get a reply.

    msgspec raises RecursionError (not a DecodeError) past ~1,000 levels; uncaught, it would
    escape the decode of client text (``service.api``), log a traceback and close with
    1011 "internal error". Caught next to msgspec.DecodeError, it is answered ``invalid_json``
    ("JSON nested too deeply").
    """
    kind = "get_status" if path == "/ws/health" else "deep"
    text = nested(2000).replace('"deep"', f'"{kind}"')
    assert len(text.encode()) <= LIMIT
    with healthy_client(hostile) as bystander, open_raw(hostile, path) as raw:
        raw.send(TEXT, text.encode())
        outcome = first_outcome_then_probe(raw, path, 0)
        report(f"deep_nesting {path}", depth=2000, outcome=outcome.label, reason=outcome.reason)
        assert outcome.kind == "reply", f"depth 2000: {outcome}"
        assert outcome.message is not None
        assert outcome.message["type"] in REPLIES
        assert_healthy(bystander, 0)


def test_message_flood_is_closed_with_1008_and_logged(hostile: ServiceProcess) -> None:
    with healthy_client(hostile) as bystander:
        with open_raw(hostile, "/ws") as raw:
            for n in range(200):  # burst 50, 100/s: the flood crosses the limit at once
                raw.send(TEXT, b'{"type":"spam","n":%d}' % n)
            outcome = None
            for _ in range(200):  # replies to the burst come first
                outcome = raw.outcome()
                if outcome.kind != "reply":
                    break
            report("rate_flood", sent=200, outcome=outcome.label if outcome else None)
        assert outcome is not None
        assert (outcome.kind, outcome.code) == ("close", 1008)
        assert "rate limit" in outcome.reason
        line = hostile.wait_for_line(r'"event":"close".*"code":1008')
        assert "WS_RATE_LIMIT=100" in line
        assert_healthy(bystander, 1)


ABUSE = [
    ("foreign origin", {"Origin": "https://evil.example", **AUTH}, 403),
    ("origin suffix", {"Origin": "http://localhost:3000.evil.example", **AUTH}, 403),
    ("origin port", {"Origin": "http://localhost:30000", **AUTH}, 403),
    ("origin null", {"Origin": "null", **AUTH}, 403),
    ("no token", {}, 401),
    ("wrong token", {"Authorization": "Bearer nope"}, 401),
    ("token prefix", {"Authorization": f"Bearer {TOKEN[:-1]}"}, 401),
    ("basic auth", {"Authorization": f"Basic {TOKEN}"}, 401),
    ("allowed origin", {"Origin": "http://localhost:3000", **AUTH}, 101),
]


def test_handshake_abuse_is_refused_and_holds_nothing(
    hostile: ServiceProcess, slow_handshakes: SlowHandshakes, hostile_server: str,
) -> None:
    statuses: dict[str, int] = {}
    for name, headers, expected in ABUSE:
        for path in PATHS:
            with RawWebSocket(hostile.port) as raw:
                statuses[f"{name} {path}"] = status = raw.handshake(path, headers)
            assert status == expected, f"{name} on {path}: HTTP {status}"
    garbage = {
        "tls hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32) + b"\r\n\r\n",
        "junk line": b"HELLO THERE\r\n\r\n",
        "no key": RawWebSocket.request("/ws").replace(b"Sec-WebSocket-Key", b"X-Key"),
        "bad version": RawWebSocket.request("/ws").replace(b"Version: 13", b"Version: 8"),
        "huge header": b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 600_000 + b"\r\n\r\n",
    }
    for name, data in garbage.items():
        with RawWebSocket(hostile.port) as raw:
            raw.sock.sendall(data)
            statuses[name] = raw.read_status()
    # A handshake dripped byte by byte over ~1 s is slow but complete: accepted.
    with RawWebSocket(hostile.port) as raw:
        request = RawWebSocket.request("/ws", AUTH)
        step = max(1, len(request) // 20)
        for i in range(0, len(request), step):
            raw.sock.sendall(request[i:i + step])
            time.sleep(0.05)  # the drip rate under test, not a synchronisation
        statuses["dripped handshake"] = raw.read_status()
    rejected = hostile.output().count('"event":"rejected"')
    report("handshake_abuse", statuses=statuses, rejected_log_lines=rejected)
    assert statuses["tls hello"] == 400
    assert statuses["junk line"] == 400
    assert statuses["no key"] == 400
    assert statuses["bad version"] == 400
    # 431 from Granian; uvicorn's h11 answers a head past its 64 KiB buffer with 400.
    assert statuses["huge header"] == (431 if hostile_server == "granian" else 400)
    assert statuses["dripped handshake"] == 101
    refused = sum(1 for _, _, code in ABUSE if code != 101) * len(PATHS)
    assert rejected >= refused
    assert "Bearer nope" not in hostile.output()  # credentials never logged
    assert TOKEN not in hostile.output()


def test_incomplete_handshakes_are_cut_and_release_fds(
    hostile: ServiceProcess, slow_handshakes: SlowHandshakes,
) -> None:
    """Runs last: handshakes opened at module start, headers never finished or never sent.

    HTTP_HEADER_TIMEOUT (its default) cuts both, and the service serves meanwhile: each
    socket's close is awaited until the default timeout plus 5 s of slack after they were
    opened (a service that kept them longer, as at Granian's own 30 s default, fails here
    whenever the module's other tests took less than that), then nothing stays held.
    """
    started = [s for n, s in enumerate(slow_handshakes.sockets) if n % 2 == 0]
    silent = [s for n, s in enumerate(slow_handshakes.sockets) if n % 2 == 1]
    cut_after: list[float] = []
    for s in started + silent:
        left = slow_handshakes.opened_at + SERVER_HEADER_TIMEOUT + 5 - time.monotonic()
        s.settimeout(max(0.1, left))
        try:
            data = s.recv(4096)  # the server's close (b"") is the event awaited
        except TimeoutError:
            data = b"<still open>"
        except ConnectionResetError:
            data = b""
        cut_after.append(time.monotonic() - slow_handshakes.opened_at)
        assert data == b"", f"incomplete handshake answered or kept: {data[:80]!r}"
        s.close()
    with healthy_client(hostile) as ws:
        assert_healthy(ws, 0)
    pid = hostile.proc.pid
    back = wait_until(lambda: fd_count(pid) <= slow_handshakes.baseline, 10)
    report("incomplete_handshakes", partial_headers=len(started),
           silent_connects=len(silent), all_cut_within_s=round(max(cut_after), 1),
           header_timeout_s=SERVER_HEADER_TIMEOUT, fds_baseline=slow_handshakes.baseline,
           fds_after=fd_count(pid))
    assert back, f"fds {fd_count(pid)} > baseline {slow_handshakes.baseline}"
