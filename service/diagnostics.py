"""``WS_DIAGNOSTICS`` log lines: one per connect, close and rejected handshake.

Each line is the marker followed by one JSON object, so operators can ``grep WS_DIAGNOSTICS``
and parse the rest. Message contents and credentials never appear in them.
"""

from __future__ import annotations

import logging

import msgspec

MARKER = "WS_DIAGNOSTICS"
logger = logging.getLogger("service.ws")
_encode = msgspec.json.Encoder().encode


def log_event(event: str, level: int = logging.INFO, **fields: object) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, "%s %s", MARKER, _encode({"event": event, **fields}).decode())


def configure_logging(level: str) -> None:
    """Give the service's loggers a handler unless the host application already did."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("service").setLevel(level.upper())
