"""Child processes: stopping them, and reading their output lines as they come."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], sig: int = signal.SIGTERM,
         timeout: float = 10.0) -> int:
    """Send ``sig`` (SIGTERM), wait ``timeout`` seconds, then SIGKILL: every child ends so."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class LineLog:
    """A child process whose output lines are kept with the monotonic time they arrived.

    A reader thread appends every line and wakes the waiters, so a test waits on the line
    itself (``wait_for``) rather than on a guessed delay. stdin is /dev/null: no child reads
    the terminal pytest runs in.
    """

    def __init__(self, argv: list[str], env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.timed: list[tuple[float, str]] = []
        self._eof = False  # the output ended: no line can come any more
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.timed.append((time.monotonic(), line.rstrip("\n")))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def lines(self) -> list[str]:
        """The lines so far (a copy): ``len(log.lines)`` marks a start for ``wait_for``."""
        with self._changed:
            return [line for _, line in self.timed]

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> tuple[int, float, str]:
        """(index, arrival time, line) of the first line from ``start`` matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(start, len(self.timed)):
                    at, line = self.timed[index]
                    if regex.search(line):
                        return index, at, line
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise AssertionError(f"no line matching {pattern!r}; output:\n{self.text()}")
                self._changed.wait(left)

    def wait_for_line(self, pattern: str, timeout: float = 10.0, start: int = 0) -> str:
        """The first line from ``start`` matching ``pattern`` (or fail with the output)."""
        return self.wait_for(pattern, timeout, start)[2]

    def wait_for_match(self, pattern: str, timeout: float = 10.0,
                       start: int = 0) -> tuple[int, re.Match[str]]:
        """(index, match) of the first line from ``start`` matching ``pattern``: its groups."""
        index, _, line = self.wait_for(pattern, timeout, start)
        match = re.search(pattern, line)
        assert match is not None
        return index, match

    def text(self) -> str:
        return "\n".join(line for _, line in self.timed)

    def output(self) -> str:
        with self._changed:
            return self.text()

    def finish(self, timeout: float) -> int:
        """Wait for the process to exit by itself; kill it if it overstays ``timeout``."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"process overstayed {timeout}s:\n{self.text()}") from None
        self._reader.join(5)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """``sig``, then SIGKILL after ``timeout``; the exit code once all output is read."""
        code = stop(self.proc, sig, timeout)
        self._reader.join(5)
        return code


def pinned(argv: list[str], core: int | None) -> list[str]:
    """Prefix ``argv`` with ``taskset -c CORE`` (threads and children inherit it)."""
    if core is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(core), *argv]
