#!/usr/bin/env python3
"""Tiny WebSocket probe for the molecule verify steps (the real checker is ws-smoke).

  ws_probe.py handshake URL [--expect TYPE] [--origin O]
      open URL (must answer 101), read the first message, check its "type"
  ws_probe.py sustain URL SECONDS [--origin O]
      stay connected to a /ws/health URL for SECONDS: no close, heartbeats keep arriving
  ws_probe.py close-code URL SECONDS [--origin O]
      connect, then wait up to SECONDS for the server to close; print the close code

Prints one JSON line; exit 0 on success, 1 on a failed check. Loopback URLs only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect


def _open(url: str, origin: str | None):  # type: ignore[no-untyped-def]
    host = urlsplit(url).hostname or ""
    if not (host.startswith("127.") or host in {"localhost", "::1"}):
        raise SystemExit(f"refusing non-loopback URL {url}")
    return connect(url, origin=origin, open_timeout=10)  # type: ignore[arg-type]


def handshake(url: str, expect: str | None, origin: str | None) -> dict[str, object]:
    with _open(url, origin) as ws:
        first = json.loads(ws.recv(timeout=10)) if expect else {}
        ok = expect is None or first.get("type") == expect
        return {"ok": ok, "status": 101, "first_type": first.get("type")}


def sustain(url: str, seconds: float, origin: str | None) -> dict[str, object]:
    heartbeats, interval, last_gap = 0, None, 0.0
    started = last = time.monotonic()
    with _open(url, origin) as ws:
        try:
            while (now := time.monotonic()) - started < seconds:
                message = json.loads(ws.recv(timeout=max(0.1, seconds - (now - started))))
                if message.get("type") == "health_status" and interval is None:
                    interval = message.get("config", {}).get("ping_interval")
                if message.get("type") == "heartbeat":
                    heartbeats += 1
                    last_gap = max(last_gap, time.monotonic() - last)
                    last = time.monotonic()
        except TimeoutError:
            pass
        except ConnectionClosed as exc:
            age = time.monotonic() - started
            return {
                "ok": False,
                "closed_after": round(age, 1),
                "code": exc.rcvd.code if exc.rcvd else 1006,
                "heartbeats": heartbeats,
            }
        ws.close(1000)
    age = time.monotonic() - started
    expected = int(age // float(interval or age)) - 1
    return {
        "ok": heartbeats >= max(1, expected),
        "seconds": round(age, 1),
        "heartbeats": heartbeats,
        "ping_interval": interval,
        "max_gap": round(last_gap, 2),
    }


def close_code(url: str, seconds: float, origin: str | None) -> dict[str, object]:
    with _open(url, origin) as ws:
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            return {"ok": False, "code": None, "detail": "still open"}
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            return {"ok": code == 1001, "code": code}
    return {"ok": False, "code": None}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["handshake", "sustain", "close-code"])
    parser.add_argument("url")
    parser.add_argument("seconds", nargs="?", type=float, default=10.0)
    parser.add_argument("--expect")
    parser.add_argument("--origin")
    args = parser.parse_args()
    try:
        if args.mode == "handshake":
            result = handshake(args.url, args.expect, args.origin)
        elif args.mode == "sustain":
            result = sustain(args.url, args.seconds, args.origin)
        else:
            result = close_code(args.url, args.seconds, args.origin)
    except InvalidStatus as exc:
        result = {"ok": False, "status": exc.response.status_code}
    except OSError as exc:
        result = {"ok": False, "error": str(exc)}
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
