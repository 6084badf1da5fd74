"""Peer servers for the benchmark, each one process, run as ``python -m bench.peers.NAME``.

Every peer takes ``--port`` and ``--ping-interval``. The echo peers serve ``/ws`` (echo) and
``/ws/health`` (a ``heartbeat`` message every interval, the service's equivalent); the floor
peers (``litestar_min``, ``asgi_reply``, see ``ws_reply``) serve ``/ws`` only, with the
service's own ``/ws`` reply.
"""

from __future__ import annotations

import argparse


def peer_parser(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ping-interval", type=float, default=30.0)
    return parser


def heartbeat_text(number: int, timestamp: float, age: float) -> str:
    """The heartbeat the raw peers send: same fields as the service's ``Heartbeat``."""
    return (
        f'{{"type":"heartbeat","ping_number":{number},"timestamp":{timestamp},'
        f'"connection_age_seconds":{round(age, 3)},"client_id":"peer"}}'
    )
