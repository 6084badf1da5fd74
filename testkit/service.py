"""``ws-service`` as a child process on a free 127.0.0.1 port, its log lines at hand."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Mapping
from pathlib import Path

from testkit.paths import VENV_BIN
from testkit.ports import free_port
from testkit.processes import LineLog

SHORT_INTERVALS = {"WS_PING_INTERVAL": "0.4", "WS_PING_TIMEOUT": "0.2"}
TRACEBACK = "Traceback (most recent call last)"
READY = "ready: serving on"


def ws_service() -> str:
    """The venv's ``ws-service`` executable."""
    return shutil.which("ws-service", path=str(VENV_BIN)) or str(VENV_BIN / "ws-service")


def service_env(**overrides: str) -> dict[str, str]:
    """This environment without the service's own settings, on 127.0.0.1, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WS_", "ALLOWED_ORIGINS", "PUBLIC_BASE_URL"))}
    env.update({"HOST": "127.0.0.1", "LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1"})
    env.update(overrides)
    return env


class ServiceProcess(LineLog):
    """A running ``ws-service``; its output is collected so callers can wait on log lines."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int,
                 cwd: Path | None = None) -> None:
        self.port = port
        self.tracebacks_expected = False
        """True: a test that makes the service fail on purpose (the fixture checks its log)."""
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}"
        super().__init__(argv, env=env, cwd=cwd)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        return super().stop(sig, timeout)


def start_service(env: Mapping[str, str], argv: list[str] | None = None,
                  ready: str | None = READY, ready_timeout: float = 20.0) -> ServiceProcess:
    """``ws-service`` (or ``argv``) with ``env`` on its ``PORT`` (default: a free port).

    Waits for the ready line unless ``ready`` is None; stops the process if it never comes.
    """
    settings = dict(env)
    port = int(settings.pop("PORT", 0)) or free_port()
    proc = ServiceProcess(argv or [ws_service()], service_env(PORT=str(port), **settings), port)
    if ready:
        try:
            proc.wait_for_line(ready, timeout=ready_timeout)
        except BaseException:
            proc.stop(timeout=5)
            raise
    return proc


StartService = Callable[..., ServiceProcess]
"""The ``start_service`` fixture's type: ``start_service(argv=None, ready=..., **env)``."""
