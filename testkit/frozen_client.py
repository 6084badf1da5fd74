"""A separate client process for the "peer freezes" case (SIGSTOP: no reads, no pongs, no close).

``python -m testkit.frozen_client URL --pongs N --deadline S`` connects to
``URL`` (a /ws/health URL on 127.0.0.1), answers the first ``N`` heartbeats with a pong and
prints ``ponged N``; the test then stops it with SIGSTOP. After SIGCONT it reads on and prints
``closed CODE REASON`` for the close the server sent meanwhile. It exits by itself: on that
close, or after ``--deadline`` seconds in all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="frozen_client")
    parser.add_argument("url")
    parser.add_argument("--pongs", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=30.0)
    args = parser.parse_args(argv)
    if urlsplit(args.url).hostname != "127.0.0.1":
        print(f"refusing non-loopback URL {args.url}", flush=True)
        return 2
    deadline = time.monotonic() + args.deadline
    ponged = 0
    with connect(args.url, open_timeout=10, ping_interval=None, close_timeout=2) as ws:
        try:
            while (left := deadline - time.monotonic()) > 0:
                message = json.loads(ws.recv(timeout=left))
                if message.get("type") == "health_status" and "client_id" in message:
                    print(f"client_id {message['client_id']}", flush=True)
                if message.get("type") == "heartbeat" and ponged < args.pongs:
                    ws.send(json.dumps({"type": "pong", "ping_number": message["ping_number"]}))
                    ponged += 1
                    if ponged == args.pongs:
                        print(f"ponged {ponged}", flush=True)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else 1006
            reason = closed.rcvd.reason if closed.rcvd else ""
            print(f"closed {code} {reason}", flush=True)
            return 0
        except TimeoutError:
            pass
    print("deadline reached without a close", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
