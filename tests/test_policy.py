"""Every timing rule of a connection, with plain numbers for time: no process, no clock, no flake.

The process tests (tests/test_service.py) keep checking the wire with generous bounds; the
exact schedule is pinned here.
"""

from __future__ import annotations

import asyncio

import pytest

from service.codes import CloseCode
from service.policy import Beat, Close, Limits, Policy
from service.scheduler import Scheduler

PERIODIC = Limits(interval=30, ping_timeout=10, send_timeout=10, max_bytes=1024, periodic=True)
IDLE = Limits(interval=30, ping_timeout=10, send_timeout=10, max_bytes=1024, periodic=False)


def beats(policy: Policy, until: float, step: float = 0.5) -> list[tuple[float, int]]:
    """(time, number) of each heartbeat the policy asks for, ticking every ``step``."""
    out = []
    now = policy.opened_at
    while now <= until:
        action = policy.due(now)
        if isinstance(action, Beat):
            out.append((now, action.number))
        now += step
    return out


def test_periodic_heartbeats_fall_on_the_grid_from_open_plus_phase() -> None:
    policy = Policy(PERIODIC, now=100.0, phase=0.5)
    assert beats(policy, 100 + 95) == [(130.5, 1), (160.5, 2), (190.5, 3)]


def test_a_late_tick_does_not_push_later_beats_back() -> None:
    policy = Policy(PERIODIC, now=0.0)
    assert policy.due(30.0) == Beat(1)
    assert policy.due(62.0) == Beat(2)  # 2 s late
    assert policy.next_deadline() == 90.0  # still on the grid
    assert policy.due(200.0) == Beat(3)  # so late that beats were skipped: no burst
    assert policy.next_deadline() == 230.0


def test_idle_endpoints_skip_beats_while_the_line_is_busy() -> None:
    policy = Policy(IDLE, now=0.0)
    policy.send_started(25.0)
    policy.send_finished(25.0)  # a reply at 25 s
    assert policy.due(30.0) is None
    assert policy.next_deadline() == 55.0  # one interval after the last send
    assert policy.due(55.0) == Beat(1)


def test_periodic_endpoint_beats_regardless_of_other_sends() -> None:
    policy = Policy(PERIODIC, now=0.0)
    policy.send_started(29.0)
    policy.send_finished(29.0)
    assert policy.due(30.0) == Beat(1)


def test_clients_that_never_pong_are_never_timed_out() -> None:
    policy = Policy(PERIODIC, now=0.0)
    for k in range(1, 20):
        assert policy.due(30.0 * k) == Beat(k)
        assert policy.due(30.0 * k + 15) is None
    assert policy.closed is None


def test_pong_aware_client_silent_past_the_timeout_is_closed_1011() -> None:
    policy = Policy(PERIODIC, now=0.0)
    assert policy.due(30.0) == Beat(1)
    policy.message(31.0, '{"type":"pong"}')
    policy.pong()
    assert policy.due(60.0) == Beat(2)
    assert policy.next_deadline() == 70.0
    assert policy.due(69.9) is None
    action = policy.due(70.0)
    assert isinstance(action, Close)
    assert action.code == CloseCode.INTERNAL_ERROR
    assert "heartbeat timeout" in (action.reason or "")


def test_any_message_within_the_timeout_answers_a_heartbeat() -> None:
    policy = Policy(PERIODIC, now=0.0)
    policy.due(30.0)
    policy.message(31.0, "{}")
    policy.pong()
    assert policy.due(60.0) == Beat(2)
    policy.message(65.0, '{"type":"get_status"}')
    assert policy.due(70.0) is None
    assert policy.closed is None


def test_a_message_the_driver_only_stamps_answers_a_heartbeat_too() -> None:
    """The driver skips message() for short texts and writes last_received alone."""
    policy = Policy(PERIODIC, now=0.0)
    assert policy.unchecked_chars == 1024 // 4
    policy.due(30.0)
    policy.pong()
    assert policy.due(60.0) == Beat(2)
    policy.last_received = 60.0  # in the beat's own tick: counts
    assert policy.due(70.0) is None
    assert policy.next_deadline() == 90.0
    assert policy.due(90.0) == Beat(3)
    policy.last_received = 89.0  # before the beat: does not
    assert isinstance(policy.due(100.0), Close)


def test_with_a_rate_limit_every_message_is_checked() -> None:
    limits = Limits(interval=30, ping_timeout=10, send_timeout=10, max_bytes=1024,
                    periodic=False, rate=2.0, burst=3.0)
    assert Policy(limits, now=0.0).unchecked_chars == -1


def test_a_send_blocked_for_the_send_timeout_drops_the_peer_without_a_frame() -> None:
    policy = Policy(PERIODIC, now=0.0)
    policy.send_started(5.0)
    assert policy.send_expired(14.9) is None
    action = policy.send_expired(15.0)
    assert action == Close(CloseCode.ABNORMAL_CLOSURE, "send blocked for 10s: peer not reading",
                           "server", send_frame=False, cause="send_deadline")


def test_overlapping_sends_are_timed_from_the_first() -> None:
    policy = Policy(PERIODIC, now=0.0)
    policy.send_started(1.0)  # a reply
    policy.send_started(2.0)  # a heartbeat behind it
    policy.send_finished(3.0)
    assert policy.send_since == 1.0
    policy.send_finished(4.0)
    assert policy.send_since is None
    assert policy.send_expired(100.0) is None


def test_the_reply_the_driver_awaits_is_timed_too_and_the_oldest_send_counts() -> None:
    policy = Policy(PERIODIC, now=0.0)
    policy.reply_since = 1.0  # the connection's own task awaits a reply (no call)
    policy.send_started(2.0)  # a heartbeat from its own task
    assert policy.send_expired(10.9) is None
    assert isinstance(policy.send_expired(11.0), Close)
    other = Policy(PERIODIC, now=0.0)
    other.send_started(1.0)
    other.reply_since = 5.0
    assert isinstance(other.send_expired(11.0), Close)  # the heartbeat's 10 s
    assert Policy(PERIODIC, now=0.0).send_expired(100.0) is None


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    limits = Limits(interval=30, ping_timeout=10, send_timeout=10, max_bytes=1024,
                    periodic=False, rate=2.0, burst=3.0)
    policy = Policy(limits, now=0.0)
    assert [policy.message(0.0, "{}") for _ in range(3)] == [None] * 3
    assert policy.message(0.5, "{}") is None  # 0.5 s refilled one token
    action = policy.message(0.5, "{}")
    assert isinstance(action, Close)
    assert action.code == CloseCode.POLICY_VIOLATION


def test_a_clock_reading_before_open_never_debits_the_bucket() -> None:
    """The driver passes the coarse scheduler clock, which may predate the policy's open time:
    a full burst right after connect must still pass, with nothing taken away."""
    limits = Limits(interval=30, ping_timeout=10, send_timeout=10, max_bytes=1024,
                    periodic=False, rate=2.0, burst=3.0)
    policy = Policy(limits, now=10.0)
    assert [policy.message(9.9, "{}") for _ in range(3)] == [None] * 3
    assert isinstance(policy.message(9.95, "{}"), Close)


@pytest.mark.parametrize(
    ("text", "code"),
    [(None, CloseCode.UNSUPPORTED_DATA), ("x" * 1025, CloseCode.MESSAGE_TOO_BIG),
     ("é" * 513, CloseCode.MESSAGE_TOO_BIG), ("é" * 512, None), ("x" * 1024, None)],
    ids=["binary", "too-many-chars", "too-many-utf8-bytes", "utf8-at-limit", "at-limit"],
)
def test_size_in_utf8_bytes_and_kind(text: str | None, code: int | None) -> None:
    action = Policy(IDLE, now=0.0).message(0.0, text)
    assert (action.code if action else None) == code


def test_the_first_close_wins_and_disconnects_say_who() -> None:
    policy = Policy(IDLE, now=0.0)
    first = policy.close(CloseCode.GOING_AWAY, "server shutting down", cause="shutdown")
    assert policy.close(CloseCode.INTERNAL_ERROR, "later", cause="internal") is first
    assert policy.due(1000.0) is None  # a closed connection asks for nothing
    assert Policy(IDLE, 0.0).disconnected(4001) == Close(4001, None, "client", False, "client")
    assert Policy(IDLE, 0.0).disconnected(1005) == Close(1005, None, "unknown", False, "unknown")


class _Item:
    def __init__(self, deadlines: list[float]) -> None:
        self.deadlines = deadlines
        self.fired: list[float] = []
        self.send_checks = 0

    def on_timer(self, now: float) -> float | None:
        self.fired.append(now)
        return self.deadlines.pop(0) if self.deadlines else None

    def on_send_check(self, now: float) -> None:
        self.send_checks += 1


def test_scheduler_fires_each_item_at_its_deadlines_and_sweeps_sends() -> None:
    clock = [0.0]

    async def scenario() -> tuple[list[float], list[float], int, int]:
        scheduler = Scheduler(resolution=0.1, clock=lambda: clock[0], send_check_every=0.2)
        a, b = _Item([0.35, 1.0]), _Item([])
        scheduler.schedule(a, 0.2)
        scheduler.schedule(b, 0.25)
        for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 1.05):
            clock[0] = t
            scheduler.tick()
        assert len(scheduler) == 0
        await scheduler.stop()
        return a.fired, b.fired, a.send_checks, b.send_checks

    a_fired, b_fired, a_checks, b_checks = asyncio.run(scenario())
    assert a_fired == [0.2, 0.4, 1.05]  # each at the first tick at or after its deadline
    assert b_fired == [0.3]
    # Every scheduled item, at the first tick at or after every 0.2 s (0.2, 0.4, 0.9): b had
    # left after its one deadline, a stayed until 1.05.
    assert (a_checks, b_checks) == (3, 1)


def test_scheduler_cancel_and_reschedule() -> None:
    clock = [0.0]

    async def scenario() -> list[float]:
        scheduler = Scheduler(resolution=0.1, clock=lambda: clock[0])
        item = _Item([])
        scheduler.schedule(item, 0.5)
        scheduler.schedule(item, 0.2)  # moved earlier: fires once, at the new time
        scheduler.cancel(item)
        scheduler.schedule(item, 0.3)
        for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
            clock[0] = t
            scheduler.tick()
        await scheduler.stop()
        return item.fired

    assert asyncio.run(scenario()) == [0.3]
