"""The open sessions of one process, so a shutdown can say goodbye to each of them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from service.session import GOING_AWAY

if TYPE_CHECKING:
    from service.session import Session


class Registry:
    def __init__(self) -> None:
        self._sessions: set[Session] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self.closing = False

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, session: Session) -> None:
        self._sessions.add(session)
        self._empty.clear()

    def discard(self, session: Session) -> None:
        self._sessions.discard(session)
        if not self._sessions:
            self._empty.set()

    def shed(self, count: int, reason: str) -> int:
        """Ask up to ``count`` sessions, the newest first, to reconnect elsewhere (1001)."""
        if self.closing:
            return 0
        open_ = [session for session in self._sessions if not session.closing]
        newest = sorted(open_, key=lambda s: s.opened_at, reverse=True)[:count]
        for session in newest:
            session.request_close(GOING_AWAY, reason)
        return len(newest)

    async def close_all(self, code: int, reason: str, timeout: float) -> int:
        """Ask every session to close with ``code``; wait up to ``timeout`` for them to finish.

        Returns how many sessions were still open when the time ran out.
        """
        self.closing = True
        for session in list(self._sessions):
            session.request_close(code, reason)
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return len(self._sessions)
        return 0
