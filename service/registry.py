"""The open connections of one process, so a shutdown can say goodbye to each of them.

It also keeps each endpoint's totals for ``/metrics`` (:mod:`service.metrics`): a closed
connection's counters are folded in once, at close, so they outlive the connection object.

The registry knows a connection only as a :class:`Member`; the session module depends on the
registry, never the other way round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Protocol

from service.codes import CloseCode
from service.policy import Cause, Close


class Member(Protocol):
    """What the registry and ``/metrics`` read of an open connection (a ``Session``)."""

    opened_at: float
    messages_in: int
    messages_out: int

    @property
    def close_ack(self) -> str | None:
        """How the client answered the server's close frame (``service.connection.CloseAck``)."""

    @property
    def path(self) -> str: ...

    @property
    def ping_count(self) -> int: ...

    @property
    def closed(self) -> Close | None: ...

    @property
    def closing(self) -> bool: ...

    def request_close(self, code: int, reason: str, cause: Cause) -> None: ...


class EndpointTotals:
    """What the closed sessions of one endpoint did, in plain ints (read at scrape time)."""

    __slots__ = ("close_acks", "closes", "heartbeats", "messages_in", "messages_out", "opened",
                 "rate_limit_closes", "send_deadline_drops")

    def __init__(self) -> None:
        self.opened = 0
        self.closes: dict[tuple[int, str], int] = {}  # (close code, closed_by) -> count
        self.close_acks: dict[str, int] = {}  # how clients answered server closes -> count
        self.messages_in = 0
        self.messages_out = 0
        self.heartbeats = 0
        self.send_deadline_drops = 0
        self.rate_limit_closes = 0


class Registry:
    def __init__(self) -> None:
        self._sessions: set[Member] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self.closing = False
        self.totals: dict[str, EndpointTotals] = {}
        self.refused: dict[str, int] = {}
        """Handshakes refused before accept, by the metric's reason label."""

    def __len__(self) -> int:
        return len(self._sessions)

    def sessions(self) -> Iterator[Member]:
        return iter(self._sessions)

    def endpoint_totals(self, path: str) -> EndpointTotals:
        totals = self.totals.get(path)
        if totals is None:
            totals = self.totals[path] = EndpointTotals()
        return totals

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def add(self, session: Member) -> None:
        self._sessions.add(session)
        self._empty.clear()
        self.endpoint_totals(session.path).opened += 1

    def discard(self, session: Member) -> None:
        if session in self._sessions:
            self._sessions.remove(session)
            self._fold(session)
        if not self._sessions:
            self._empty.set()

    def _fold(self, session: Member) -> None:
        """Add a closing session's counters to its endpoint's totals (once: it leaves the set)."""
        totals = self.endpoint_totals(session.path)
        totals.messages_in += session.messages_in
        totals.messages_out += session.messages_out
        totals.heartbeats += session.ping_count
        close = session.closed
        key = ((int(close.code), close.by) if close is not None
               else (int(CloseCode.ABNORMAL_CLOSURE), "unknown"))
        totals.closes[key] = totals.closes.get(key, 0) + 1
        if session.close_ack is not None:
            totals.close_acks[session.close_ack] = totals.close_acks.get(session.close_ack, 0) + 1
        if close is None:
            return
        if close.cause == "send_deadline":
            totals.send_deadline_drops += 1
        elif close.cause == "rate_limit":
            totals.rate_limit_closes += 1

    def shed(self, count: int, reason: str) -> int:
        """Ask up to ``count`` sessions, the newest first, to reconnect elsewhere (1001)."""
        if self.closing:
            return 0
        open_ = [session for session in self._sessions if not session.closing]
        newest = sorted(open_, key=lambda s: s.opened_at, reverse=True)[:count]
        for session in newest:
            session.request_close(CloseCode.GOING_AWAY, reason, "shed")
        return len(newest)

    async def close_all(self, code: int, reason: str, timeout: float,
                        cause: Cause = "shutdown") -> int:
        """Ask every session to close with ``code``; wait up to ``timeout`` for them to finish.

        Returns how many sessions were still open when the time ran out.
        """
        self.closing = True
        for session in list(self._sessions):
            session.request_close(code, reason, cause)
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return len(self._sessions)
        return 0
