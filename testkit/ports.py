"""Free 127.0.0.1 ports, and waiting until a process listens on one."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


class NotListening(AssertionError):
    """Nothing accepted connections in time, or the process meant to died first."""


def free_port() -> int:
    """A port the kernel has just handed out on 127.0.0.1 (free until someone binds it)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None = None,
                  log: Path | None = None, timeout: float = 20.0) -> None:
    """Block until 127.0.0.1:``port`` accepts a TCP connection.

    With ``proc``, fail at once (with ``log``'s text, if given) when it exits first, and wait
    on the process between attempts: a refused connect returns at once, so the pause between
    attempts is a bounded wait on the process, not a sleep standing in for readiness.
    """
    def text() -> str:
        return log.read_text(errors="replace") if log is not None and log.exists() else ""

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise NotListening(f"process exited with {proc.returncode} before listening on "
                               f"{port}:\n{text()}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise NotListening(f"nothing listens on {LOOPBACK}:{port} after {timeout}s:\n"
                                   f"{text()}") from None
            if proc is None:
                time.sleep(0.02)  # no process to wait on: a bounded poll of the port
            else:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.05)
