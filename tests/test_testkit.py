"""``testkit``'s small pieces: the one percentile, readiness waits that fail fast."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from testkit.ports import NotListening, free_port, wait_for_port
from testkit.processes import LineLog, stop
from testkit.stats import or_none, percentile


def test_percentile_is_nearest_rank_and_nan_for_no_values() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert (percentile(values, 50), percentile(values, 51), percentile(values, 99),
            percentile(values, 100)) == (50.0, 51.0, 99.0, 100.0)
    assert percentile([3.0], 1) == 3.0
    assert math.isnan(percentile([], 50))
    assert or_none(percentile([], 99)) is None
    assert or_none(0.04321 * 1000) == 43.2


def test_wait_for_port_fails_at_once_when_the_process_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(NotListening, match="exited with 3"):
        wait_for_port(free_port(), proc, timeout=30)


def test_line_log_waits_for_a_line_and_fails_with_the_output() -> None:
    log = LineLog([sys.executable, "-u", "-c", "print('one'); print('ready: two')"])
    try:
        assert log.wait_for_line(r"^ready: ", 10) == "ready: two"
        with pytest.raises(AssertionError, match=r"(?s)no line matching.*one"):
            log.wait_for("never", 10)
    finally:
        assert stop(log.proc) == 0
