"""Real service processes for the tests: ``ws-service`` on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.02)
        else:
            return


class ServiceProcess:
    """A running ``ws-service``; its output is collected so tests can wait on log lines."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int) -> None:
        self.port = port
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}"
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 10.0, start: int = 0) -> str:
        """Block until a log line matching ``pattern`` appears (or fail with the log)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no log line matching {pattern!r}; output:\n" + "\n".join(self.lines)
                    )
                self._changed.wait(left)

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(5)
        return code


SHORT_INTERVALS = {"WS_PING_INTERVAL": "0.4", "WS_PING_TIMEOUT": "0.2"}


def service_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WS_", "ALLOWED_ORIGINS"))}
    env.update({"HOST": "127.0.0.1", "LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1"})
    env.update(overrides)
    return env


StartService = Callable[..., ServiceProcess]


@pytest.fixture
def start_service() -> Iterator[StartService]:
    """Start ``ws-service`` with the given environment; every process is stopped afterwards."""
    started: list[ServiceProcess] = []
    executable = shutil.which("ws-service", path=str(VENV_BIN)) or "ws-service"

    def start(argv: list[str] | None = None, ready: str | None = "ready: serving on",
              **env: str) -> ServiceProcess:
        port = int(env.pop("PORT", 0)) or free_port()
        proc = ServiceProcess(
            argv or [executable], service_env(PORT=str(port), **{**SHORT_INTERVALS, **env}), port
        )
        started.append(proc)
        if ready:
            proc.wait_for_line(ready, timeout=20)
        return proc

    yield start
    for proc in started:
        proc.stop(timeout=10)


@pytest.fixture
def service(start_service: StartService) -> ServiceProcess:
    """The service with short heartbeat intervals (0.4 s, timeout 0.2 s) and default origins."""
    return start_service()
