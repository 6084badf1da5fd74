"""The cases: numbered in the Autobahn test suite's categories, each with the RFC's outcome.

A case sends its frames on a fresh connection and judges what came back with one of the
judges below, which hold the RFC's rules in one place:

* :func:`expect_echo`: the message comes back (``--echo raw``: the same bytes; ``--echo
  json``: a JSON reply containing the JSON object sent, as this service's ``/ws/echo`` does);
* :func:`expect_failure`: the server *fails the connection* (section 7.1.7) with a close frame
  naming the error (1002, 1007, 1009), then ends TCP; a close without the code, or TCP ended
  without a close frame, is allowed there but not the best (non-strict); answering the invalid
  input, or never closing, breaks a MUST (fail);
* :func:`expect_close_reply`: the client started the close handshake; the server answers with
  a close frame (echoing the code) and then ends TCP with a FIN (sections 5.5.1, 7.1.1).

Whatever a case judges, a frame the server got wrong itself (masked, reserved bits, a close
code not allowed on the wire) makes it a fail.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from smoke.conformance.client import ClientSettings, Connection, Endpoint, Message
from smoke.conformance.frames import (
    BINARY,
    CLOSE,
    CONT,
    NO_STATUS,
    PING,
    PONG,
    RSV1,
    RSV2,
    RSV3,
    TEXT,
    Inflater,
    build_frame,
    close_payload,
    deflate_message,
    wire_close_code_valid,
)
from smoke.conformance.model import EchoMode, Verdict

Judgement = tuple[Verdict, str]

CLIENT_CLOSE_DELAY = 1.0
"""Cases that watch whether the server waits for the client's close frame answer it this late;
a server that ends TCP within it did not wait (a FIN follows its close frame at once)."""
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
_JSON_TYPE = "conformance"


@dataclass
class Outgoing:
    """A data message a case sends, and how to recognise its echo."""

    opcode: int
    payload: bytes
    obj: dict[str, Any] | None = None
    """``--echo json``: the object sent, which the echo must contain."""
    nonce: bytes = b""

    def matches(self, message: Message) -> bool:
        if self.obj is None or self.opcode == BINARY:
            return message.opcode == self.opcode and message.payload == self.payload
        if message.opcode != TEXT:
            return False
        try:
            reply = json.loads(message.payload)
        except ValueError:
            return False
        return _contains(reply, self.obj)

    def answered_by(self, message: Message) -> bool:
        """Whether ``message`` is a reply to this one (for invalid input: any reply at all)."""
        if self.obj is None:
            return True
        return self.nonce in message.payload


def _contains(value: object, wanted: dict[str, Any]) -> bool:
    if value == wanted:
        return True
    if isinstance(value, dict):
        return any(_contains(v, wanted) for v in value.values())
    if isinstance(value, list):
        return any(_contains(v, wanted) for v in value)
    return False


@dataclass
class Context:
    """What every case gets: where to connect, how echoes look, the limits to test."""

    endpoint: Endpoint
    settings: ClientSettings
    echo: EchoMode
    oversize: int
    connections: list[Connection] = field(default_factory=list)

    @property
    def timeout(self) -> float:
        return self.settings.timeout

    async def open(self, extensions: str | None = None) -> Connection:
        conn = await Connection.open(self.endpoint, self.settings, extensions)
        self.connections.append(conn)
        return conn

    def text(self, data: str | bytes = "", *, size: int = 0) -> Outgoing:
        """A text message carrying ``data`` (bytes: possibly invalid UTF-8), padded with "x"
        to ``size`` bytes. ``--echo json`` wraps it in a JSON object, so the smallest message
        there is that object with empty data (about 60 bytes)."""
        raw = data.encode() if isinstance(data, str) else data
        nonce = os.urandom(6).hex()
        if self.echo == "raw":
            return Outgoing(TEXT, raw + b"x" * max(0, size - len(raw)))
        head = f'{{"type":"{_JSON_TYPE}","id":"{nonce}","data":"'.encode()
        tail = b'"}'
        pad = b"x" * max(0, size - len(head) - len(raw) - len(tail))
        payload = head + raw + pad + tail
        try:
            obj = json.loads(payload)
        except ValueError:  # invalid UTF-8: nothing may echo it, so nothing to match
            obj = {"type": _JSON_TYPE, "id": nonce}
        return Outgoing(TEXT, payload, obj=obj, nonce=nonce.encode())

    def binary(self, payload: bytes) -> Outgoing:
        return Outgoing(BINARY, payload)


# --- judges ---------------------------------------------------------------------------------


def _ms(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return ""
    return f" after {(end - start) * 1000:.0f} ms"


def _closed_how(conn: Connection) -> str:
    rec = conn.record
    if rec.close_received:
        code = rec.close_code
        shown = "a close frame without status code (client sees 1005)" if code == NO_STATUS \
            else f"close {code}"
        return shown + _ms(conn.mark_at, rec.close_at)
    if conn.ended:
        return (f"TCP {_tcp_name(conn)} without a close frame "
                f"(client sees 1006){_ms(conn.mark_at, conn.end_at)}")
    return "no close"


async def expect_echo(ctx: Context, conn: Connection, out: Outgoing) -> Judgement:
    """The message must come back; a binary one may instead be refused with 1003."""
    if conn.mark_at is None:
        conn.mark()
    rec = conn.record

    def found() -> bool:
        return any(out.matches(m) for m in rec.messages)

    def other() -> Message | None:
        if ctx.echo == "json":  # greetings and heartbeats may come first: not replies
            return None
        return next((m for m in rec.messages if not out.matches(m)), None)

    await conn.wait(lambda: found() or other() is not None or rec.close_received)
    if found():
        return "pass", f"echoed ({len(out.payload)} B){_ms(conn.mark_at, time.monotonic())}"
    if (wrong := other()) is not None:
        return "fail", (f"the reply differs from the message sent: {wrong.opcode:#x} "
                        f"{len(wrong.payload)} B, sent {out.opcode:#x} {len(out.payload)} B")
    if rec.close_received:
        await _complete_close(ctx, conn)
    if out.opcode == BINARY and rec.close_received and rec.close_code == 1003:
        return "pass", ("closed 1003: this endpoint takes no binary data (section 7.4.1 "
                        "allows it; in --echo json mode binary cases expect it)")
    if rec.close_received or conn.ended:
        return "fail", f"no echo: {_closed_how(conn)}"
    return "fail", f"no echo within {ctx.timeout:g}s"


async def _complete_close(ctx: Context, conn: Connection, *, delay: float = 0.0) -> None:
    """After the server's close frame: answer it (``delay`` s late, unless TCP ends first),
    then give the server the timeout to end TCP."""
    if conn.ended is None and delay:
        await conn.wait_end(delay)
    if conn.ended is None and conn.client_close_at is None:
        conn.send_close(conn.reply_code())
    if conn.ended is None:
        await conn.wait_end()


def _tcp_after_handshake(ctx: Context, conn: Connection) -> Judgement | None:
    if conn.ended is None:
        return "fail", (f"{_closed_how(conn)}, but TCP still open {ctx.timeout:g}s after the "
                        "close handshake (section 5.5.1: MUST close the TCP connection)")
    return None


async def expect_failure(ctx: Context, conn: Connection, code: int, *,
                         sent: Outgoing | None = None, delay: float = 0.0,
                         allowed: tuple[int, ...] = ()) -> Judgement:
    """The server must fail the connection, ideally with a close frame carrying ``code``.

    ``sent``: the invalid message, whose echo would be a fail (``None``: any data reply is).
    ``delay``: answer the server's close this late, to see whether it waits for it.
    ``allowed``: other codes that are a pass too.
    """
    if conn.mark_at is None:
        conn.mark()
    rec = conn.record

    def answered() -> Message | None:
        after = rec.messages[conn.mark_index:]
        if sent is None:
            return next(iter(after), None) if ctx.echo == "raw" else None
        return next((m for m in after if sent.answered_by(m)), None)

    await conn.wait(lambda: rec.close_received or answered() is not None)
    if (reply := answered()) is not None:
        return "fail", (f"answered the invalid input ({len(reply.payload)} B reply) instead of "
                        f"failing the connection with {code}")
    if not rec.close_received and conn.ended is None:
        return "fail", f"no close within {ctx.timeout:g}s: the connection stays open"
    if rec.close_received:
        await _complete_close(ctx, conn, delay=delay)
    verdict, detail = _failure_verdict(ctx, conn, code, allowed)
    if delay and rec.close_received:
        detail += "; " + _waited(conn, delay)
    return verdict, detail


def _failure_verdict(ctx: Context, conn: Connection, code: int, allowed: tuple[int, ...]
                     ) -> Judgement:
    rec = conn.record
    how = _closed_how(conn)
    if not rec.close_received:
        return "non-strict", (f"{how}; section 7.1.7 allows it, but a close {code} would name "
                              "the error")
    got = rec.close_code
    if got is not None and got != NO_STATUS and not wire_close_code_valid(got):
        return "fail", f"{how}: {got} must not be sent in a close frame (section 7.4)"
    if (late := _tcp_after_handshake(ctx, conn)) is not None:
        return late
    if got == NO_STATUS:
        return "non-strict", (f"{how} where {code} names the error; section 7.1.7 allows it "
                              "(a Close frame SHOULD carry an appropriate status code)")
    if got != code and got not in allowed:
        return "non-strict", f"{how} where {code} names the error"
    return "pass", f"{how}, then TCP {_tcp_name(conn)}{_ms(conn.mark_at, conn.end_at)}"


def _tcp_name(conn: Connection) -> str:
    return {"fin": "FIN", "reset": "reset", None: "open"}[conn.ended]


def _waited(conn: Connection, delay: float) -> str:
    """Whether the server kept TCP open for the client's close frame, sent ``delay`` late."""
    rec = conn.record
    gap = "" if rec.close_at is None or conn.end_at is None else \
        f" {max(0.0, conn.end_at - rec.close_at) * 1000:.0f} ms after its close frame"
    if _closed_first(conn):
        return (f"the server ended TCP{gap}, before the client's close frame ({delay:g}s "
                "late): allowed when it fails the connection (section 7.1.7), not after a "
                "close it chose (section 7.1.1: the server closes TCP once both close frames "
                "are exchanged); a client still sending then gets a reset")
    return f"the server waited for the client's close frame ({delay:g}s late), then ended TCP"


def _closed_first(conn: Connection) -> bool:
    return conn.end_at is not None and (conn.client_close_at is None
                                        or conn.end_at < conn.client_close_at)


async def expect_close_reply(ctx: Context, conn: Connection, code: int | None,
                             *, sent: Outgoing | None = None) -> Judgement:
    """The client sent a close frame with ``code`` (None: no status): the server answers with
    a close frame (echoing ``code``) and ends TCP with a FIN."""
    if conn.mark_at is None:
        conn.mark()
    rec = conn.record
    await conn.wait_close()
    if sent is not None and any(sent.matches(m) for m in rec.messages):
        return "fail", ("echoed a message sent after the client's close frame (section 5.5.1: "
                        "data after a close frame is not processed)")
    if not rec.close_received:
        if conn.ended:
            return "fail", (f"{_closed_how(conn)}: the server MUST answer a close frame with "
                            "one (section 5.5.1)")
        return "fail", f"no close frame within {ctx.timeout:g}s"
    if conn.ended is None:
        await conn.wait_end()
    how = _closed_how(conn)
    got = rec.close_code
    if got is not None and got != NO_STATUS and not wire_close_code_valid(got):
        return "fail", f"{how}: {got} must not be sent in a close frame (section 7.4)"
    if (late := _tcp_after_handshake(ctx, conn)) is not None:
        return late
    tcp = f"then TCP {_tcp_name(conn)}{_ms(conn.mark_at, conn.end_at)}"
    reason = ""
    if rec.close_reason:
        reason = f", reason {rec.close_reason.decode(errors='replace')!r}"
    if code is None:
        same = got in (NO_STATUS, 1000)
        wanted = "a close frame without status (or 1000)"
    else:
        same = got == code
        wanted = f"close {code} echoed"
    if not same:
        return "non-strict", (f"{how}{reason}, {tcp}: {wanted} is usual (section 5.5.1: the "
                              "endpoint typically echoes the status code it received)")
    if conn.ended == "reset":
        if sent is not None:  # the client's own data after its close: unread, so a reset
            return "pass", f"{how}{reason}, {tcp} (the data sent after the close was not read)"
        return "non-strict", f"{how}{reason}, {tcp}: a FIN is the orderly end (section 7.1.1)"
    return "pass", f"{how}{reason}, {tcp}"


# --- the cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    title: str
    rfc: str
    expected: str
    run: Callable[[Context], Awaitable[Judgement]]


CASES: list[Case] = []


def case(id: str, category: str, title: str, rfc: str, expected: str
         ) -> Callable[[Callable[[Context], Awaitable[Judgement]]],
                       Callable[[Context], Awaitable[Judgement]]]:
    def register(run: Callable[[Context], Awaitable[Judgement]]
                 ) -> Callable[[Context], Awaitable[Judgement]]:
        CASES.append(Case(id, category, title, rfc, expected, run))
        return run
    return register


def _echo_case(id: str, title: str, rfc: str, make: Callable[[Context], Outgoing],
               category: str = "Framing") -> None:
    async def run(ctx: Context) -> Judgement:
        conn = await ctx.open()
        out = make(ctx)
        conn.send(out.opcode, out.payload)
        return await expect_echo(ctx, conn, out)

    expected = "echo of the message"
    if "binary" in title:
        expected += " (or close 1003 if the endpoint takes no binary)"
    case(id, category, title, rfc, expected)(run)


def _failure_case(id: str, category: str, title: str, rfc: str, code: int, *,
                  frames: Callable[[Context], list[bytes]]) -> None:
    async def run(ctx: Context) -> Judgement:
        conn = await ctx.open()
        for frame in frames(ctx):
            conn.send_raw(frame)
        return await expect_failure(ctx, conn, code)

    case(id, category, title, rfc, f"close {code} then TCP close")(run)


def _frame(opcode: int, payload: bytes = b"", **kw: Any) -> bytes:
    return build_frame(opcode, payload, **kw)


# 1 Framing --------------------------------------------------------------------------------

_echo_case("1.1.1", "text message, smallest (empty; --echo json: the bare object)", "5.6",
           lambda ctx: ctx.text())
_echo_case("1.1.2", "text message of 125 bytes (7-bit length)", "5.2",
           lambda ctx: ctx.text(size=125))
_echo_case("1.1.3", "text message of 126 bytes (16-bit length)", "5.2",
           lambda ctx: ctx.text(size=126))
_echo_case("1.1.4", "text message of 65,536 bytes (64-bit length)", "5.2",
           lambda ctx: ctx.text(size=65536))
_echo_case("1.2.1", "binary message of 125 bytes, every byte value", "5.6",
           lambda ctx: ctx.binary(bytes(range(125))))


@case("1.3.1", "Masking", "unmasked text frame from the client", "5.1",
      "close 1002 then TCP close")
async def _unmasked(ctx: Context) -> Judgement:
    conn = await ctx.open()
    out = ctx.text("unmasked")
    conn.send(out.opcode, out.payload, mask=False)
    return await expect_failure(ctx, conn, 1002, sent=out)


@case("1.3.2", "Masking", "text frame masked with the all-zero key", "5.3",
      "echo of the message (any 32-bit key is a valid mask)")
async def _zero_key(ctx: Context) -> Judgement:
    conn = await ctx.open()
    out = ctx.text("zero key")
    conn.send_raw(_frame(out.opcode, out.payload, key=b"\0\0\0\0"))
    return await expect_echo(ctx, conn, out)


# 2 Pings and pongs ------------------------------------------------------------------------


async def _pong_for(ctx: Context, payload: bytes) -> Judgement:
    conn = await ctx.open()
    conn.send(PING, payload)
    conn.mark()
    rec = conn.record
    await conn.wait(lambda: bool(rec.pongs) or rec.close_received)
    if rec.pongs:
        if rec.pongs[0] == payload:
            return "pass", (f"pong with the same {len(payload)} B payload"
                            f"{_ms(conn.mark_at, time.monotonic())}")
        return "fail", f"pong payload differs: {rec.pongs[0]!r} for {payload!r}"
    return "fail", f"no pong: {_closed_how(conn)}" + (
        "" if rec.close_received or conn.ended else f" within {ctx.timeout:g}s")


@case("2.1", "Pings and pongs", "ping without payload", "5.5.2, 5.5.3",
      "pong with the same (empty) payload")
async def _ping_empty(ctx: Context) -> Judgement:
    return await _pong_for(ctx, b"")


@case("2.2", "Pings and pongs", "ping with a 125-byte binary payload", "5.5.2, 5.5.3",
      "pong with the same payload")
async def _ping_125(ctx: Context) -> Judgement:
    return await _pong_for(ctx, bytes(range(256))[-125:])


@case("2.3", "Pings and pongs", "ping with a 126-byte payload (control frame over 125)",
      "5.5", "close 1002 then TCP close (no pong)")
async def _ping_126(ctx: Context) -> Judgement:
    conn = await ctx.open()
    conn.send(PING, b"p" * 126)
    verdict, detail = await expect_failure(ctx, conn, 1002)
    if conn.record.pongs:
        return "fail", f"answered an oversized ping with a pong; {detail}"
    return verdict, detail


@case("2.4", "Pings and pongs", "unsolicited pong, then a text message", "5.5.3",
      "the pong is ignored; echo of the message")
async def _unsolicited_pong(ctx: Context) -> Judgement:
    conn = await ctx.open()
    conn.send(PONG, b"unsolicited")
    out = ctx.text("after an unsolicited pong")
    conn.send(out.opcode, out.payload)
    return await expect_echo(ctx, conn, out)


@case("2.5", "Pings and pongs", "ten pings in a row, then a text message", "5.5.3",
      "a pong for (at least) the last ping, payloads in order; then the echo")
async def _ten_pings(ctx: Context) -> Judgement:
    conn = await ctx.open()
    payloads = [f"ping {i}".encode() for i in range(10)]
    for payload in payloads:
        conn.send(PING, payload)
    out = ctx.text("after ten pings")
    conn.send(out.opcode, out.payload)
    verdict, detail = await expect_echo(ctx, conn, out)
    pongs = conn.record.pongs
    it = iter(payloads)
    in_order = all(p in it for p in pongs)
    if not pongs or pongs[-1] != payloads[-1] or not in_order:
        return "fail", f"pongs {[p.decode(errors='replace') for p in pongs]}; {detail}"
    return verdict, f"{len(pongs)} pongs, last for the last ping; {detail}"


# 3 Reserved bits --------------------------------------------------------------------------


def _rsv_case(id: str, title: str, rsv: int, opcode: int) -> None:
    @case(id, "Reserved bits", title, "5.2", "close 1002 then TCP close (no extension "
          "negotiated gives the bit a meaning)")
    async def run(ctx: Context) -> Judgement:
        conn = await ctx.open()
        out = ctx.text("reserved bit")
        conn.send(opcode, out.payload if opcode == TEXT else b"rsv", rsv=rsv)
        verdict, detail = await expect_failure(ctx, conn, 1002, sent=out)
        if opcode == PING and conn.record.pongs:
            return "fail", f"answered the ping with a pong; {detail}"
        return verdict, detail


_rsv_case("3.1", "text frame with RSV1 set (no permessage-deflate)", RSV1, TEXT)
_rsv_case("3.2", "text frame with RSV2 set", RSV2, TEXT)
_rsv_case("3.3", "ping with RSV3 set", RSV3, PING)


# 4 Opcodes --------------------------------------------------------------------------------


def _opcode_case(id: str, title: str, opcode: int, *, after_echo: bool) -> None:
    @case(id, "Opcodes", title, "5.2",
          ("echo of the first message, then " if after_echo else "") + "close 1002 then "
          "TCP close")
    async def run(ctx: Context) -> Judgement:
        conn = await ctx.open()
        if after_echo:
            out = ctx.text("before a reserved opcode")
            conn.send(out.opcode, out.payload)
            verdict, detail = await expect_echo(ctx, conn, out)
            if verdict != "pass":
                return verdict, detail
            conn.mark_at = None
        conn.send(opcode, b"reserved")
        return await expect_failure(ctx, conn, 1002, sent=None)


_opcode_case("4.1.1", "reserved data opcode 0x3", 0x3, after_echo=False)
_opcode_case("4.1.2", "reserved data opcode 0x7 after a valid message", 0x7, after_echo=True)
_opcode_case("4.2.1", "reserved control opcode 0xB", 0xB, after_echo=False)
_opcode_case("4.2.2", "reserved control opcode 0xF after a valid message", 0xF,
             after_echo=True)


# 5 Fragmentation --------------------------------------------------------------------------


def _split(payload: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(payload)]
    return [payload[a:b] for a, b in itertools.pairwise(bounds)]


def _fragments(opcode: int, parts: list[bytes]) -> list[bytes]:
    last = len(parts) - 1
    return [_frame(opcode if i == 0 else CONT, part, fin=i == last)
            for i, part in enumerate(parts)]


_failure_case("5.1", "Fragmentation", "ping fragmented into two frames", "5.4, 5.5", 1002,
              frames=lambda ctx: [_frame(PING, b"frag", fin=False), _frame(CONT, b"ment")])


@case("5.2", "Fragmentation", "text message in two fragments", "5.4",
      "echo of the whole message")
async def _two_fragments(ctx: Context) -> Judgement:
    conn = await ctx.open()
    out = ctx.text("fragmented in two", size=64)
    for frame in _fragments(TEXT, _split(out.payload, [len(out.payload) // 2])):
        conn.send_raw(frame)
    return await expect_echo(ctx, conn, out)


@case("5.3", "Fragmentation", "text message in three fragments, a ping between each",
      "5.4, 5.5.2", "a pong for each ping (control frames may interleave), then the echo")
async def _interleaved_pings(ctx: Context) -> Judgement:
    conn = await ctx.open()
    out = ctx.text("fragmented with pings", size=90)
    frames = _fragments(TEXT, _split(out.payload, [30, 60]))
    pings = [b"between 1", b"between 2"]
    conn.send_raw(frames[0] + _frame(PING, pings[0]) + frames[1] + _frame(PING, pings[1])
                  + frames[2])
    verdict, detail = await expect_echo(ctx, conn, out)
    if verdict == "pass" and conn.record.pongs != pings:
        return "fail", f"pongs {conn.record.pongs!r} for pings {pings!r}; {detail}"
    return verdict, f"2 pongs; {detail}" if verdict == "pass" else detail


_failure_case("5.4", "Fragmentation", "continuation frame with no message started", "5.4",
              1002, frames=lambda ctx: [_frame(CONT, b"orphan")])
_failure_case("5.5", "Fragmentation", "a new text frame inside a fragmented message", "5.4",
              1002, frames=lambda ctx: [_frame(TEXT, b"first", fin=False), _frame(TEXT, b"second")])


@case("5.6", "Fragmentation", "text message in fragments, the first and last empty", "5.4",
      "echo of the whole message")
async def _empty_fragments(ctx: Context) -> Judgement:
    conn = await ctx.open()
    out = ctx.text("empty fragments around")
    for frame in _fragments(TEXT, [b"", out.payload, b""]):
        conn.send_raw(frame)
    return await expect_echo(ctx, conn, out)


# 6 UTF-8 ----------------------------------------------------------------------------------

_VALID = "κόσμε · 日本語 · 🎉"
_echo_case("6.1", "valid multi-byte UTF-8 text", "5.6, 8.1",
           lambda ctx: ctx.text(_VALID), category="UTF-8 handling")


@case("6.2", "UTF-8 handling", "a 4-byte code point split across three fragments", "5.4, 8.1",
      "echo of the whole message (UTF-8 is checked on the message, not the fragment)")
async def _split_code_point(ctx: Context) -> Judgement:
    conn = await ctx.open()
    out = ctx.text("🎉 split")
    at = out.payload.index("🎉".encode())
    for frame in _fragments(TEXT, _split(out.payload, [at + 1, at + 3])):
        conn.send_raw(frame)
    return await expect_echo(ctx, conn, out)


def _invalid_utf8_case(id: str, title: str, bad: bytes, *, fragmented: bool) -> None:
    @case(id, "UTF-8 handling", title, "8.1, 7.4.1", "close 1007 then TCP close (no echo)")
    async def run(ctx: Context) -> Judgement:
        conn = await ctx.open()
        out = ctx.text(b"valid start " + bad + b" end")
        if fragmented:
            at = out.payload.index(bad)
            for frame in _fragments(TEXT, _split(out.payload, [at - 4, at + len(bad) + 2])):
                conn.send_raw(frame)
        else:
            conn.send(TEXT, out.payload)
        return await expect_failure(ctx, conn, 1007, sent=out)


_invalid_utf8_case("6.3", "invalid UTF-8 (a UTF-16 surrogate, ED A0 80) in a text frame",
                   b"\xed\xa0\x80", fragmented=False)
_invalid_utf8_case("6.4", "invalid UTF-8 (byte FF) in the middle fragment of a message",
                   b"\xff", fragmented=True)
_invalid_utf8_case("6.5", "truncated UTF-8 sequence (E2 82, then ASCII)", b"\xe2\x82",
                   fragmented=False)
_invalid_utf8_case("6.6", "overlong encoding of '/' (C0 AF)", b"\xc0\xaf", fragmented=False)


# 7 Close handling -------------------------------------------------------------------------


def _client_close_case(id: str, title: str, rfc: str, code: int, *, reason: bytes,
                       answer: int) -> None:
    """The client closes with ``code`` and ``reason``: the server echoes ``answer`` (the same
    code, for a valid one) and FINs, or fails the connection with ``answer``."""
    echoed = answer == code
    expected = (f"close frame with code {code} echoed, server FINs after" if echoed
                else f"close {answer} then TCP close")

    @case(id, "Close handling", title, rfc, expected)
    async def run(ctx: Context) -> Judgement:
        conn = await ctx.open()
        conn.send_close(code, reason)
        if echoed:
            return await expect_close_reply(ctx, conn, code)
        return await expect_failure(ctx, conn, answer)


_client_close_case("7.1.1", "client closes with 1000 and a reason", "5.5.1, 7.1.1", 1000,
                   reason=b"ws-smoke: bye", answer=1000)


@case("7.1.2", "Close handling", "a text message sent after the client's close frame",
      "5.5.1", "close 1000 echoed; the message after the close is not echoed")
async def _data_after_close(ctx: Context) -> Judgement:
    conn = await ctx.open()
    out = ctx.text("after close")
    conn.send_close(1000)
    conn.send(out.opcode, out.payload)
    return await expect_close_reply(ctx, conn, 1000, sent=out)


@case("7.1.3", "Close handling", "close frame without a body", "5.5.1, 7.1.5",
      "a close frame (without status, or 1000), server FINs after")
async def _empty_close(ctx: Context) -> Judgement:
    conn = await ctx.open()
    conn.send_close(None)
    return await expect_close_reply(ctx, conn, None)


_failure_case("7.1.4", "Close handling", "close frame with a one-byte body", "5.5.1", 1002,
              frames=lambda ctx: [_frame(CLOSE, b"\x03")])
_failure_case("7.1.5", "Close handling", "close frame of 126 bytes (control frame over 125)",
              "5.5", 1002, frames=lambda ctx: [_frame(CLOSE, close_payload(1000, b"r" * 124))])


@case("7.2.1", "Close handling", "server-initiated close: does the server wait for the "
      "client's close frame?", "7.1.1, 7.1.7",
      f"close 1002 then TCP close; reported: whether the server waits for the client's close "
      f"frame (sent {CLIENT_CLOSE_DELAY:g} s late) or ends TCP at once (both allowed, 7.1.7)")
async def _server_waits(ctx: Context) -> Judgement:
    conn = await ctx.open()
    conn.send(0x3, b"reserved opcode")
    return await expect_failure(ctx, conn, 1002, delay=CLIENT_CLOSE_DELAY)


def _valid_code_case(id: str, code: int, what: str) -> None:
    _client_close_case(id, f"client closes with {code} ({what})", "5.5.1, 7.4", code,
                       reason=b"ws-smoke", answer=code)


_valid_code_case("7.3.1", 1001, "going away")
_valid_code_case("7.3.2", 4000, "application-defined range")


@case("7.5.1", "Close handling", "close reason that is not UTF-8", "5.5.1, 8.1",
      "close 1007 then TCP close")
async def _bad_reason(ctx: Context) -> Judgement:
    conn = await ctx.open()
    conn.send_close(1000, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")
    return await expect_failure(ctx, conn, 1007)


def _invalid_code_case(id: str, code: int, what: str) -> None:
    _client_close_case(id, f"close code {code} ({what})", "7.4.1, 7.4.2", code,
                       reason=b"ws-smoke", answer=1002)


_invalid_code_case("7.9.1", 999, "below the defined range")
_invalid_code_case("7.9.2", 1004, "reserved")
_invalid_code_case("7.9.3", 1005, "no status: never on the wire")
_invalid_code_case("7.9.4", 1006, "abnormal closure: never on the wire")
_invalid_code_case("7.9.5", 2999, "unassigned protocol range")
_invalid_code_case("7.9.6", 5000, "above the defined range")


# 9 Limits ---------------------------------------------------------------------------------


async def _oversize(ctx: Context, conn: Connection, out: Outgoing) -> Judgement:
    rec = conn.record
    await conn.wait(lambda: rec.close_received or any(out.matches(m) for m in rec.messages))
    if any(out.matches(m) for m in rec.messages):
        return "informational", (f"echoed {len(out.payload):,} B: no limit at this size "
                                 "(--oversize sets it)")
    return await expect_failure(ctx, conn, 1009, sent=out, delay=CLIENT_CLOSE_DELAY)


@case("9.1", "Limits", "oversize text message in one frame (--oversize bytes)", "10.4, 7.4.1",
      "close 1009 then TCP close (reported: whether the server waits for the client's close "
      "frame, as 7.2.1); an echo means no limit at that size (informational)")
async def _oversize_frame(ctx: Context) -> Judgement:
    conn = await ctx.open()
    out = ctx.text(size=ctx.oversize)
    conn.send(out.opcode, out.payload)
    conn.mark()
    return await _oversize(ctx, conn, out)


@case("9.2", "Limits", "oversize text message in 64 KiB fragments", "10.4, 7.4.1",
      "close 1009 as 9.1 (a limit on the message, not only the frame)")
async def _oversize_fragments(ctx: Context) -> Judgement:
    conn = await ctx.open()
    out = ctx.text(size=ctx.oversize)
    cuts = list(range(65536, len(out.payload), 65536))
    conn.send_raw(b"".join(_fragments(TEXT, _split(out.payload, cuts))))
    conn.mark()
    return await _oversize(ctx, conn, out)


@case("9.3", "Limits", "frame header announcing 2^62 bytes, no payload", "10.4, 7.4.1",
      "close 1009 at once (the length alone is too big); waiting for the payload is "
      "non-strict")
async def _huge_header(ctx: Context) -> Judgement:
    conn = await ctx.open()
    conn.send(BINARY, b"", length=1 << 62)
    conn.mark()
    rec = conn.record
    await conn.wait(lambda: rec.close_received)
    if not rec.close_received and conn.ended is None:
        return "non-strict", (f"no close within {ctx.timeout:g}s: waits for the announced "
                              "payload (section 10.4: a server SHOULD limit frame size)")
    return await expect_failure(ctx, conn, 1009, allowed=(1002,))


# 12 Compression ---------------------------------------------------------------------------


def _deflate_answer(answer: str | None) -> tuple[str | None, dict[str, str | None]]:
    """(error, parameters) of a permessage-deflate answer to :data:`DEFLATE_OFFER`."""
    if not answer:
        return None, {}
    offers = [part.strip() for part in answer.split(",")]
    if len(offers) != 1:
        return f"answered {len(offers)} extensions to one offer", {}
    name, *raw = [item.strip() for item in offers[0].split(";")]
    if name.lower() != "permessage-deflate":
        return f"answered {name!r}, which was not offered (RFC 6455 section 9.1)", {}
    params: dict[str, str | None] = {}
    for item in raw:
        key, sep, value = item.partition("=")
        params[key.strip().lower()] = value.strip().strip('"') if sep else None
    for key, given in params.items():
        if key in ("server_no_context_takeover", "client_no_context_takeover"):
            if given is not None:
                return f"{key} takes no value (RFC 7692 section 7.1.1)", params
        elif key in ("server_max_window_bits", "client_max_window_bits"):
            if given is None or not given.isdigit() or not 8 <= int(given) <= 15:
                return f"{key}={given} is not 8..15 (RFC 7692 section 7.1.2)", params
        else:
            return f"unknown parameter {key!r} (RFC 7692 section 7)", params
    return None, params


async def _deflate_open(ctx: Context) -> tuple[Connection, str | None,
                                                dict[str, str | None]]:
    conn = await ctx.open(DEFLATE_OFFER)
    answer = conn.headers.get("sec-websocket-extensions")
    error, params = _deflate_answer(answer)
    if answer and error is None:
        bits = params.get("server_max_window_bits")
        conn.inflater = Inflater(no_context_takeover="server_no_context_takeover" in params,
                                 window_bits=int(bits) if bits else 15)
    return conn, error, params


@case("12.1", "Compression", f"handshake offering '{DEFLATE_OFFER}'", "RFC 7692 5, 7",
      "permessage-deflate answered in Sec-WebSocket-Extensions with valid parameters, or "
      "declined cleanly (no header; the connection works uncompressed)")
async def _deflate_offer(ctx: Context) -> Judgement:
    conn, error, _ = await _deflate_open(ctx)
    answer = conn.headers.get("sec-websocket-extensions")
    if error is not None:
        return "fail", f"Sec-WebSocket-Extensions: {answer}: {error}"
    out = ctx.text("uncompressed after the offer")
    conn.send(out.opcode, out.payload)
    verdict, detail = await expect_echo(ctx, conn, out)
    if verdict != "pass":
        return verdict, f"after the offer: {detail}"
    if not answer:
        return "informational", f"not negotiated: declined cleanly; {detail}"
    return "pass", f"negotiated: {answer}; {detail}"


@case("12.2", "Compression", "a compressed text message (RSV1) once negotiated",
      "RFC 7692 6, 7.2", "echo of the message (the reply may be compressed); "
      "informational when permessage-deflate was not negotiated")
async def _deflate_echo(ctx: Context) -> Judgement:
    conn, error, params = await _deflate_open(ctx)
    answer = conn.headers.get("sec-websocket-extensions")
    if not answer or error is not None:
        return "informational", "permessage-deflate not negotiated: not run"
    out = ctx.text("compressed " * 20)
    bits = params.get("client_max_window_bits")
    conn.send(TEXT, deflate_message(out.payload, int(bits) if bits else 15), rsv=RSV1)
    return await expect_echo(ctx, conn, out)


def select(ids: list[str]) -> list[Case]:
    """The cases named, or under a named group ("7" and "7.1" select 7.1.1 ...)."""
    if not ids:
        return list(CASES)
    return [c for c in CASES if any(c.id == i or c.id.startswith(i.rstrip(".") + ".")
                                    for i in ids)]


def unknown(ids: list[str]) -> list[str]:
    return [i for i in ids if not any(c.id == i or c.id.startswith(i.rstrip(".") + ".")
                                      for c in CASES)]
