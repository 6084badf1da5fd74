"""``ws-smoke conformance``: its expectations proven on a known-good server, then the service.

* the ``websockets`` library's server (in this process, on 127.0.0.1) is the reference: every
  case must pass there, so a case whose expectation is wrong fails here, not in a report;
* a deliberately broken server (echoes everything, never closes) must get ``fail`` verdicts,
  each within the timeout: the tool finds violations and never hangs;
* the service on each server (``SERVERS``: Granian and uvicorn) runs the CLI as a user
  would, and each case's verdict and close code is held to
  ``tests/conformance/<server>.json``; the matrix in docs/conformance.md must show the same;
* the frame builder and parser, by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from websockets.asyncio.server import ServerConnection, serve

from smoke.conformance.cases import CASES, _deflate_answer, select
from smoke.conformance.client import ClientSettings, parse_endpoint
from smoke.conformance.frames import (
    BINARY,
    CLOSE,
    PING,
    RSV1,
    TEXT,
    FrameParser,
    Inflater,
    accept_for,
    build_frame,
    close_payload,
    deflate_message,
    parse_close,
    parse_response_head,
    wire_close_code_valid,
)
from smoke.conformance.model import ConformanceReport
from smoke.conformance.report import junit_xml, render_text
from smoke.conformance.run import run_conformance
from testkit.paths import REPO, VENV_BIN
from testkit.service import StartService

EXPECTATIONS = REPO / "tests" / "conformance"
DOC = REPO / "docs" / "conformance.md"
TIMEOUT = 10.0
"""Each wait of a case. No passing case waits it out, so a generous one costs nothing."""

SERVERS: dict[str, dict[str, str]] = {
    "granian": {"WS_SERVER": "granian"},
    "uvicorn": {"WS_SERVER": "uvicorn"},
}
"""Server name -> the service's extra environment; ``tests/conformance/<name>.json`` holds
its expected verdicts (docs/conformance.md says how to add one)."""

# Heartbeats at the defaults: none falls inside a run (they would be skipped anyway).
_QUIET = {"WS_PING_INTERVAL": "30", "WS_PING_TIMEOUT": "10"}


# --- against servers in this process ----------------------------------------------------------


async def _echo(ws: ServerConnection) -> None:
    with contextlib.suppress(Exception):
        async for message in ws:
            await ws.send(message)


@contextlib.asynccontextmanager
async def _reference() -> AsyncIterator[str]:
    """The websockets library's server, echoing, at its defaults (max_size 1 MiB)."""
    logger = logging.getLogger("conformance-reference")
    logger.setLevel(logging.CRITICAL)  # each failed connection logs a traceback otherwise
    async with serve(_echo, "127.0.0.1", 0, logger=logger) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


def _settings(timeout: float = TIMEOUT) -> ClientSettings:
    return ClientSettings(timeout=timeout)


def test_every_case_passes_against_the_websockets_reference_server() -> None:
    async def run() -> ConformanceReport:
        async with _reference() as url:
            return await run_conformance(parse_endpoint(url), _settings(), list(CASES))

    report = asyncio.run(run())
    assert report.echo == "raw"
    assert report.echo_detected
    wrong = [f"{r.id} {r.title}: {r.verdict}: {r.detail}" for r in report.results
             if r.verdict != "pass"]
    assert not wrong, "\n".join(wrong)
    assert report.exit_code == 0
    assert [r.id for r in report.results] == [c.id for c in CASES]
    by_id = {r.id: r for r in report.results}
    # The observations the verdicts rest on are in the report, not only in the prose.
    normal = by_id["7.1.1"].observed
    assert (normal.close_code, normal.close_reason, normal.tcp) == (1000, "ws-smoke: bye", "fin")
    assert by_id["6.3"].observed.close_code == 1007
    assert by_id["12.1"].observed.extensions is not None
    assert by_id["12.1"].observed.extensions.startswith("permessage-deflate")
    # Failing the connection, websockets ends TCP at once (section 7.1.7 allows it).
    assert by_id["7.2.1"].observed.closed_before_client_close is True


async def _broken_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts, echoes every data frame as it came (invalid UTF-8 too), ignores close frames
    and never closes: what a server that checks nothing does."""
    head = await reader.readuntil(b"\r\n\r\n")
    _, headers = parse_response_head(b"HTTP/1.1 000 request\r\n" + head.split(b"\r\n", 1)[1])
    accept = accept_for(headers["sec-websocket-key"])
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n")
    parser = FrameParser()
    with contextlib.suppress(Exception):
        while data := await reader.read(65536):
            for frame in parser.feed(data):
                if frame.opcode in (TEXT, BINARY):
                    writer.write(build_frame(frame.opcode, frame.payload, mask=False))
    writer.close()


def test_a_server_that_checks_nothing_fails_and_no_case_hangs() -> None:
    ids = ["6.3", "7.1.1", "3.1"]

    async def run() -> ConformanceReport:
        server = await asyncio.start_server(_broken_server, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            return await run_conformance(parse_endpoint(f"ws://127.0.0.1:{port}/"),
                                         _settings(timeout=1.0), select(ids))

    report = asyncio.run(run())
    verdicts = {r.id: (r.verdict, r.detail) for r in report.results}
    assert verdicts["6.3"][0] == "fail"
    assert "answered the invalid input" in verdicts["6.3"][1]
    assert verdicts["3.1"][0] == "fail"
    assert verdicts["7.1.1"] == ("fail", "no close frame within 1s")
    assert report.exit_code == 1
    assert all(r.duration_s < 4 * 1.0 + 3 for r in report.results)
    junit = junit_xml(report).getroot()
    assert junit.get("failures") == "3"
    assert "7.1.1" in render_text(report, width=100)


# --- the service on each server, through the CLI ----------------------------------------------


def _expected(server: str) -> dict[str, Any]:
    table: dict[str, Any] = json.loads((EXPECTATIONS / f"{server}.json").read_text())
    return table


@pytest.mark.parametrize("server", list(SERVERS))
def test_service_matches_its_expectation_table(server: str, start_service: StartService,
                                               tmp_path: Path) -> None:
    service = start_service(**_QUIET, **SERVERS[server])
    report_path, junit_path = tmp_path / "conformance.json", tmp_path / "conformance.xml"
    done = subprocess.run(
        [str(VENV_BIN / "ws-smoke"), "conformance", f"{service.ws}/ws/echo",
         "--json", str(report_path), "--junit", str(junit_path), "--timeout", str(TIMEOUT)],
        capture_output=True, text=True, timeout=120, check=False)
    assert report_path.exists(), done.stdout + done.stderr
    report = msgspec.json.decode(report_path.read_bytes(), type=ConformanceReport)
    table = _expected(server)
    assert report.echo == table["echo"]
    got = {r.id: {"verdict": r.verdict, "close_code": r.observed.close_code}
           for r in report.results}
    details = {r.id: r.detail for r in report.results}
    mismatches = [
        f"{cid}: expected {want}, actual {got.get(cid)} ({details.get(cid, 'not run')})"
        for cid, want in table["cases"].items() if got.get(cid) != want
    ]
    mismatches += [f"{cid}: not in tests/conformance/{server}.json (actual {got[cid]})"
                   for cid in got if cid not in table["cases"]]
    assert not mismatches, f"{server}:\n" + "\n".join(mismatches)
    fails = sum(want["verdict"] == "fail" for want in table["cases"].values())
    assert done.returncode == (1 if fails else 0), done.stdout + done.stderr
    root = ET.parse(junit_path).getroot()  # noqa: S314 - a file this test wrote
    assert root.get("tests") == str(len(CASES))
    assert root.get("failures") == str(fails)


def test_every_table_lists_every_case() -> None:
    ids = [c.id for c in CASES]
    for server in SERVERS:
        assert list(_expected(server)["cases"]) == ids, server


def test_docs_matrix_shows_the_tables() -> None:
    """Each matrix row: | case | title | expected | Granian | uvicorn |; each server's cell
    is its table's verdict, with the close code when there is one."""
    text = DOC.read_text()
    rows = {m[0]: [cell.strip() for cell in m[1].split("|")]
            for m in re.findall(r"^\| `(\d+(?:\.\d+)*)` \|(.*)\|$", text, re.M)}
    assert list(rows) == [c.id for c in CASES]
    for column, server in enumerate(SERVERS, start=2):
        for cid, want in _expected(server)["cases"].items():
            code = want["close_code"]
            cell = want["verdict"] + ("" if code is None else f" ({code})")
            assert rows[cid][column] == cell, (server, cid, rows[cid])


# --- the pieces -----------------------------------------------------------------------------


def test_accept_key_is_the_rfc_example() -> None:
    assert accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(("size", "header"), [(0, 2), (125, 2), (126, 4), (65535, 4),
                                              (65536, 10)])
def test_frame_lengths_use_the_shortest_form_and_parse_back(size: int, header: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    plain = build_frame(BINARY, payload, mask=False)
    assert len(plain) == header + size
    masked = build_frame(BINARY, payload, key=b"\x01\x02\x03\x04")
    assert len(masked) == header + 4 + size
    assert masked[1] & 0x80
    parser = FrameParser()
    frames = [f for i in range(len(masked)) for f in parser.feed(masked[i:i + 1])]
    assert len(frames) == 1
    frame = frames[0]
    assert (frame.opcode, frame.fin, frame.masked, frame.payload) == (BINARY, True, True, payload)


def test_builder_writes_bits_the_libraries_refuse() -> None:
    frame = build_frame(0xB, b"x", fin=False, rsv=RSV1, mask=False)
    assert frame[0] == 0x40 | 0xB  # FIN clear, RSV1 set, reserved opcode
    header_only = build_frame(BINARY, b"", length=1 << 62, mask=False)
    assert header_only == bytes([0x82, 127]) + (1 << 62).to_bytes(8, "big")
    parsed = FrameParser().feed(build_frame(PING, b"abc", rsv=0b111, mask=False))
    assert parsed[0].rsv == 0b111
    assert parsed[0].describe() == "ping 3 B (RSV=111)"


def test_close_payloads() -> None:
    assert parse_close(close_payload(1000, b"bye")) == (1000, b"bye")
    assert parse_close(b"") == (None, b"")
    assert parse_close(b"\x03") == (0, b"")
    frame = FrameParser().feed(build_frame(CLOSE, close_payload(4000, b"r"), mask=False))[0]
    assert frame.describe() == "close 4000 'r'"
    assert [c for c in (999, 1000, 1004, 1005, 1006, 1012, 1015, 2999, 3000, 4999, 5000)
            if wire_close_code_valid(c)] == [1000, 1012, 3000, 4999]


def test_deflate_round_trip_and_answers() -> None:
    data = b"compressed " * 50
    inflater = Inflater(no_context_takeover=True)
    assert inflater.inflate(deflate_message(data)) == data
    assert inflater.inflate(deflate_message(data, window_bits=9)) == data
    assert _deflate_answer(None) == (None, {})
    assert _deflate_answer("permessage-deflate; server_max_window_bits=12")[0] is None
    assert _deflate_answer("permessage-deflate; server_max_window_bits=7")[0] is not None
    assert _deflate_answer("x-webkit-deflate-frame")[0] is not None
    assert _deflate_answer("permessage-deflate; client_no_context_takeover=1")[0] is not None


def test_case_ids_are_unique_and_select_by_group() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert [c.id for c in select(["7.1"])] == ["7.1.1", "7.1.2", "7.1.3", "7.1.4", "7.1.5"]
    assert [c.id for c in select(["2.1", "12"])] == ["2.1", "12.1", "12.2"]


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(VENV_BIN / "ws-smoke"), "conformance", *args],
                              capture_output=True, text=True, timeout=60, check=False)

    assert cli("ftp://127.0.0.1/").returncode == 2
    unknown = cli("ws://127.0.0.1:9/", "--case", "99.9")
    assert unknown.returncode == 2
    assert "no such case: 99.9" in unknown.stderr
    refused = cli("ws://127.0.0.1:9/", "--timeout", "2")  # port 9 (discard): nothing listens
    assert refused.returncode == 2
    assert "connect to 127.0.0.1:9" in refused.stderr
    listed = cli("--list")
    assert listed.returncode == 0
    assert len(listed.stdout.splitlines()) == len(CASES)
