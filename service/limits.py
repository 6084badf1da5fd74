"""What one connection and one process can hold, from the settings and Granian's fixed limits.

Granian 2.8 reads each WebSocket message whole before the app sees it, with tungstenite's
defaults that no option changes: up to 64 MiB per message, 16 MiB per frame (docs/design.md).
``WS_MAX_MESSAGE_BYTES`` is applied to the finished message, so it bounds what the service
keeps, not what a sender can make Granian buffer. The start-up log states the bound.
"""

from __future__ import annotations

from service.settings import Settings

MIB = 1024 * 1024
GRANIAN_MAX_MESSAGE_BYTES = 64 * MIB
# Measured: an idle heartbeating WebSocket costs about 0.16 MiB of RSS (docs/benchmarks.md).
IDLE_CONNECTION_BYTES = 0.16 * MIB


def worst_case_per_connection() -> int:
    """One WebSocket in the middle of receiving the largest message Granian accepts."""
    return GRANIAN_MAX_MESSAGE_BYTES + int(IDLE_CONNECTION_BYTES)


def memory_bound(settings: Settings) -> str:
    per = worst_case_per_connection() / MIB
    head = (
        f"memory bound: one WebSocket may hold up to {per:.0f} MiB while a message arrives "
        f"(Granian's fixed 64 MiB message limit; WS_MAX_MESSAGE_BYTES="
        f"{settings.ws_max_message_bytes} applies once it has arrived), about "
        f"{IDLE_CONNECTION_BYTES / MIB:.2f} MiB when idle"
    )
    cap = settings.ws_max_connections
    if cap:
        total = cap * worst_case_per_connection() / (1024 * MIB)
        return f"{head}; WS_MAX_CONNECTIONS={cap}: at most {total:.1f} GiB in the worst case"
    return (
        f"{head}; WS_MAX_CONNECTIONS=0 (no cap): no process-wide bound, so cap what one client "
        "address may open at the proxy (the nginx role's nginx_limit_conn_per_address)"
    )
