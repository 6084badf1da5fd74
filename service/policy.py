"""Every rule of one connection, with no I/O: fed events and times, it answers with actions.

Like the ``websockets`` library's sans-I/O protocol, this object never touches a socket or a
clock. The driver (:mod:`service.session`) feeds it what happened and when (a message, a pong,
a send starting or finishing, a timer firing) and carries out what it answers: send a
heartbeat, close with a code, or drop the peer without a frame. So every timing rule is tested
with plain numbers (tests/test_policy.py), and the driver stays thin.

Rules:

* **heartbeat grid**: heartbeats fall on ``opened_at + phase + k * interval``; a late tick
  does not push later beats back. ``phase`` (fixed per connection, below a second) spreads a
  crowd that connected at once. Idle-suppressed endpoints skip a beat while something else
  was sent within the last interval and resume one interval after that send.
* **ping timeout**: a client that has answered a heartbeat once (pong-aware) must send
  something within ``ping_timeout`` of each later heartbeat, or it is closed with 1011.
  Anything received counts: the driver writes ``last_received``, and the deadline is checked
  against it when it comes.
* **send deadline**: a send blocked for ``send_timeout`` means the peer stopped reading: it is
  dropped without a close frame (there is no room for one). The driver times the reply its
  own task awaits by writing ``reply_since`` (no call per message), other sends with
  ``send_started``/``send_finished``; the oldest counts.
* **rate limit**: a token bucket of ``rate`` messages a second and ``burst`` at once; past
  it, 1008.
* **size and kind**: a binary frame gets 1003, a text over ``max_bytes`` UTF-8 bytes 1009.
  With no rate limit a text of at most ``unchecked_chars`` characters breaks no rule (four
  UTF-8 bytes a character at most): the driver calls :meth:`Policy.message` only for longer
  ones, so a typical message costs the rules two stores, not a call.
* **close**: the first close requested wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from service.codes import CloseCode

ClosedBy = Literal["server", "client", "unknown"]
Cause = Literal[
    "client", "unknown", "protocol", "binary", "too_big", "rate_limit", "ping_timeout",
    "send_deadline", "shutdown", "shed", "internal", "app",
]
"""Why a connection closed, typed (metrics and the registry count by it, never by reason text).

``client``/``unknown``: the peer's close (``unknown``: no status code, maybe a cut);
``protocol``: the server's own protocol layer closed it (a frame it refused, a message over
its size limit) and told the app afterwards; ``app``: an endpoint's handler closed it
(``Session.close``); the rest are the policy's and the service's."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The policy's numbers, from the settings and the endpoint."""

    interval: float
    ping_timeout: float
    send_timeout: float
    max_bytes: int
    periodic: bool
    """True: a heartbeat every interval. False: only after an interval with nothing sent."""
    rate: float = 0.0
    burst: float = 0.0


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str | None  # None: not known (Granian does not pass a client's reason on)
    by: ClosedBy = "server"
    send_frame: bool = True
    cause: Cause = "client"


@dataclass(frozen=True, slots=True)
class Beat:
    """Send heartbeat number ``number``."""

    number: int


Action = Beat | Close


class Policy:
    __slots__ = (
        "_awaiting_pong", "_beat_due", "_pong_deadline", "_refilled", "_sends", "_tokens",
        "closed", "last_received", "last_sent", "limits", "opened_at", "ping_count",
        "pong_count", "reply_since", "send_since", "unchecked_chars",
    )

    def __init__(self, limits: Limits, now: float, phase: float = 0.0) -> None:
        self.limits = limits
        self.opened_at = now
        self.last_sent = now
        """When something was last sent (idle endpoints skip a heartbeat after it)."""
        self.last_received = now
        """When a message last arrived; the driver writes it for every message."""
        self.unchecked_chars = -1 if limits.rate else limits.max_bytes // 4
        """A text this long or shorter needs no :meth:`message` call (-1: every one does)."""
        self.ping_count = 0
        self.pong_count = 0
        self.send_since: float | None = None
        """When the oldest counted send in flight began."""
        self.reply_since: float | None = None
        """When the reply the connection's own task awaits began; the driver writes it (and
        ``last_sent``) around each reply, None once it is out."""
        self.closed: Close | None = None
        self._sends = 0
        self._tokens = limits.burst
        self._refilled = now
        self._beat_due = now + phase + limits.interval
        self._awaiting_pong: float | None = None  # when the unanswered heartbeat went out
        self._pong_deadline = float("inf")

    # --- events --------------------------------------------------------------------------

    def message(self, now: float, text: str | None) -> Close | None:
        """A data message arrived (``text`` None: a binary frame); a close if it breaks a rule."""
        self.last_received = now
        limits = self.limits
        if limits.rate:
            if now > self._refilled:  # the driver's tick time may predate opened_at: no debit
                self._tokens = min(limits.burst,
                                   self._tokens + (now - self._refilled) * limits.rate)
                self._refilled = now
            if self._tokens < 1:
                return self.close(CloseCode.POLICY_VIOLATION,
                                  f"rate limit: over WS_RATE_LIMIT={limits.rate:g} messages/s",
                                  cause="rate_limit")
            self._tokens -= 1
        if text is None:
            return self.close(CloseCode.UNSUPPORTED_DATA, "binary frames are unsupported; use text",
                              cause="binary")
        limit = limits.max_bytes
        # len() counts characters; encode only when the UTF-8 size could exceed the limit.
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            return self.close(CloseCode.MESSAGE_TOO_BIG,
                              f"message exceeds WS_MAX_MESSAGE_BYTES={limit}", cause="too_big")
        return None

    def pong(self) -> None:
        """The client acknowledged a heartbeat: from now on it is held to the ping timeout."""
        self.pong_count += 1

    @property
    def pong_aware(self) -> bool:
        return self.pong_count > 0

    def send_started(self, now: float) -> None:
        if self._sends == 0:
            self.send_since = now
        self._sends += 1

    def send_finished(self, now: float) -> None:
        self._sends -= 1
        if self._sends == 0:
            self.send_since = None
        self.last_sent = now

    def disconnected(self, code: int | None, reason: str | None = None, *,
                     by_server: bool = False) -> Close:
        """The peer is gone; 1005 (no status) is not the client's choice, it may be a cut.

        ``by_server``: the server's protocol layer closed it (its frame is already sent).
        """
        if by_server:
            return self.close(code or CloseCode.PROTOCOL_ERROR, reason, send_frame=False,
                              cause="protocol")
        if code is None or code == CloseCode.NO_STATUS_RCVD:
            return self.close(CloseCode.NO_STATUS_RCVD, reason, by="unknown", send_frame=False,
                              cause="unknown")
        return self.close(code, reason, by="client", send_frame=False, cause="client")

    def close(self, code: int, reason: str | None, *, cause: Cause, by: ClosedBy = "server",
              send_frame: bool = True) -> Close:
        """Request a close; the first request wins and is what every later call returns."""
        if self.closed is None:
            self.closed = Close(code, reason, by, send_frame, cause)
        return self.closed

    # --- time ----------------------------------------------------------------------------

    def send_expired(self, now: float) -> Close | None:
        """A close when a send in flight has been blocked for the send timeout."""
        since, reply = self.send_since, self.reply_since
        if reply is not None and (since is None or reply < since):
            since = reply
        if since is not None and now - since >= self.limits.send_timeout:
            return self.close(
                CloseCode.ABNORMAL_CLOSURE,
                f"send blocked for {self.limits.send_timeout:g}s: peer not reading",
                send_frame=False, cause="send_deadline",
            )
        return None

    def due(self, now: float) -> Action | None:
        """What the time calls for: a close (a deadline passed), a heartbeat, or nothing."""
        if self.closed is not None:
            return None
        expired = self.send_expired(now)
        if expired is not None:
            return expired
        if now >= self._pong_deadline:
            if self._answered():
                self._awaiting_pong, self._pong_deadline = None, float("inf")
            else:
                return self.close(
                    CloseCode.INTERNAL_ERROR,
                    f"heartbeat timeout: no pong within "
                    f"WS_PING_TIMEOUT={self.limits.ping_timeout:g}s",
                    cause="ping_timeout",
                )
        if now < self._beat_due:
            return None
        limits = self.limits
        if not limits.periodic and now - self.last_sent < limits.interval:
            # Something else kept the line busy: the next beat is one interval after it.
            self._beat_due = self.last_sent + limits.interval
            return None
        self.ping_count += 1
        # On the grid: a late tick does not push later beats back; a very late one skips.
        self._beat_due += limits.interval
        if self._beat_due <= now:
            self._beat_due = now + limits.interval
        if self.pong_aware and (self._awaiting_pong is None or self._answered()):
            self._awaiting_pong = now
            self._pong_deadline = now + limits.ping_timeout
        return Beat(self.ping_count)

    def _answered(self) -> bool:
        """Something arrived since the unanswered heartbeat went out (the driver's clock is a
        tick's: a message in the beat's own tick counts)."""
        awaiting = self._awaiting_pong
        return awaiting is not None and self.last_received >= awaiting

    def next_deadline(self) -> float:
        """When ``due`` must be asked next (send deadlines are swept apart, see the driver)."""
        return min(self._beat_due, self._pong_deadline)
