"""One timer wheel per process for every connection's heartbeats and deadlines.

A timer per send (``call_later`` and its cancel) and a sleeping task per connection cost
about 4 µs per message and a task wake-up per heartbeat (docs/benchmarks.md). Instead one
task ticks every ``resolution`` seconds: it fires the connections whose deadline falls in the
slots that have passed, and every ``send_check_every`` seconds asks each connection whether a
send of its has been blocked too long. Per message the driver only reads
:attr:`Scheduler.now` (a clock read once per tick) and writes two numbers around a send
(a set of the connections sending, added to and removed from per message, cost more than
the sweep: about 0.2 ms per 1,000 connections, once per tenth of the send timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)

# Seconds. The scheduler ticks every 5-20 ms, so a healthy process sits in the first buckets;
# the long tail is an event loop blocked by something (or a starved CPU).
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Buckets:
    """A histogram's state in plain numbers: per-bucket counts (not cumulative), sum, count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENESS_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: a value on a bound counts in
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs, +Inf last, as HistogramMetricFamily takes them."""
        running, out = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


class Timed(Protocol):
    def on_timer(self, now: float) -> float | None:
        """Do what is due at ``now``; the next deadline, or None when done."""

    def on_send_check(self, now: float) -> None:
        """Drop the peer if its send has been blocked past the send timeout."""


class Scheduler:
    def __init__(self, resolution: float, clock: Callable[[], float] = time.monotonic, *,
                 send_check_every: float = 1.0) -> None:
        self.resolution = resolution
        self.clock = clock
        self.now = clock()
        """The time of the last tick: at most ``resolution`` old. Costs no clock call."""
        self.send_check_every = max(resolution, send_check_every)
        """A blocked send is found at most this late (plus a tick)."""
        self._next_send_check = self.now + self.send_check_every
        self.lateness = Buckets()
        """Heartbeat lateness in seconds (the driver observes each heartbeat; /metrics reads)."""
        self._slots: dict[int, set[Timed]] = {}
        self._slot_of: dict[Timed, int] = {}
        self._last_slot = self._slot(self.now)
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._slot_of)

    def _slot(self, at: float) -> int:
        return math.ceil(at / self.resolution)

    def schedule(self, item: Timed, at: float) -> None:
        """Fire ``item.on_timer`` at the first tick at or after ``at`` (replacing its slot)."""
        slot = max(self._slot(at), self._last_slot + 1)
        old = self._slot_of.get(item)
        if old == slot:
            return
        if old is not None:
            self._slots[old].discard(item)
        self._slots.setdefault(slot, set()).add(item)
        self._slot_of[item] = slot
        if self._task is None:  # the first connection: start ticking from now
            self.now = self.clock()
            self._last_slot = max(self._last_slot, self._slot(self.now) - 1)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduler")

    def cancel(self, item: Timed) -> None:
        slot = self._slot_of.pop(item, None)
        if slot is not None:
            bucket = self._slots.get(slot)
            if bucket is not None:
                bucket.discard(item)
                if not bucket:
                    del self._slots[slot]

    def tick(self) -> None:
        """Advance to the clock's time and fire what is due (the loop calls this)."""
        self.now = now = self.clock()
        if now >= self._next_send_check:
            self._next_send_check = now + self.send_check_every
            for item in list(self._slot_of):
                item.on_send_check(now)
        current = self._slot(now)
        if current - self._last_slot > len(self._slots):  # a long stall: visit only filed slots
            due = sorted(slot for slot in self._slots if slot <= current)
        else:
            due = [s for s in range(self._last_slot + 1, current + 1) if s in self._slots]
        self._last_slot = current
        for slot in due:
            for item in self._slots.pop(slot, ()):
                if self._slot_of.get(item) != slot:
                    continue
                del self._slot_of[item]
                try:
                    following = item.on_timer(now)
                except Exception:
                    logger.exception("timer of %r failed", item)
                    continue
                if following is not None:
                    self.schedule(item, following)

    async def _run(self) -> None:
        while True:
            delay = (self._last_slot + 1) * self.resolution - self.clock()
            await asyncio.sleep(max(0.0, delay))
            self.tick()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
