"""The smoke checker's command line against real processes on free 127.0.0.1 ports.

``ws-service`` writing to a log file, nginx with a hand-written (deliberately broken when
asked) site, and ``python -m smoke`` runs with their exit code and JSON report. Readiness is
waited on by connecting to the port (failing fast, with the process's log, if the process
dies first), never by sleeping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testkit import nginx as nginx_runner
from testkit import readme_rows
from testkit.paths import REPO, VENV_BIN
from testkit.ports import free_port, wait_for_port
from testkit.processes import LineLog, stop
from testkit.service import service_env

__all__ = ["REPO", "Nginx", "Service", "free_port", "latency_args", "launch_nginx",
           "launch_service", "run_smoke", "smoke_env", "start_smoke", "stop"]


@dataclass
class Listening:
    """A process serving on 127.0.0.1:``port``; ``files``: its log (service) or folder (nginx)."""

    port: int
    proc: subprocess.Popen[bytes]
    files: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


Service = Listening
Nginx = Listening


def launch_service(tmp: Path, **env: str) -> Service:
    """``ws-service`` on a free port; ``env`` overrides (WS_PING_INTERVAL, ALLOWED_ORIGINS...)."""
    port = free_port()
    base = service_env(**{"PORT": str(port), "WS_PING_INTERVAL": "0.5",
                          "WS_PING_TIMEOUT": "0.25", **env})
    log = tmp / f"service-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(VENV_BIN / "ws-service")], env=base, stdout=out,
                                stderr=subprocess.STDOUT)
    service = Listening(port, proc, log)
    try:
        wait_for_port(port, proc, log)
    except BaseException:
        stop(proc)
        raise
    return service


SITE = """\
map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_pass http://127.0.0.1:{backend};
        proxy_http_version 1.1;
{upgrade}{extra}        proxy_read_timeout {read_timeout};
        proxy_connect_timeout 2s;
    }}
}}
"""
UPGRADE = ("        proxy_set_header Upgrade $http_upgrade;\n"
           "        proxy_set_header Connection $connection_upgrade;\n")


def launch_nginx(tmp: Path, backend: int, *, upgrade: bool = True,
                 read_timeout: str = "60s", strip_origin: bool = False) -> Nginx:
    """A throwaway nginx proxying to 127.0.0.1:backend: a minimal site, not the role's, so a
    test can leave out the upgrade headers, cut idle connections early, or drop the
    ``Origin`` header (a proxy that hides every browser's origin from the service)."""
    port = free_port()
    site = SITE.format(port=port, backend=backend, upgrade=UPGRADE if upgrade else "",
                       read_timeout=read_timeout,
                       extra='        proxy_set_header Origin "";\n' if strip_origin else "")
    runner = nginx_runner.Nginx(tmp / f"nginx-{port}", site, port, connections=256,
                                access_log=True)
    runner.start()
    assert runner.proc is not None
    return Listening(port, runner.proc, runner.folder)


@dataclass
class SmokeRun:
    code: int
    out: str
    err: str
    report: dict[str, Any]

    def result(self, name: str, via: str = "target") -> dict[str, Any]:
        for r in self.report["results"]:
            if r["name"] == name and r.get("via", "target") == via:
                return dict(r)
        raise AssertionError(f"no result {via}:{name} in {self.out}")

    def diagnosis(self, code: str) -> dict[str, Any]:
        """The diagnosis ``code``, which must read as the README's troubleshooting row for it
        says (``testkit.readme_rows``)."""
        for d in self.report["diagnoses"]:
            if d["code"] == code:
                readme_rows.check(code, f"[{code}] {d['cause']}")
                return dict(d)
        raise AssertionError(f"no diagnosis {code!r}; output:\n{self.out}\n{self.err}")

    @property
    def codes(self) -> list[str]:
        return [d["code"] for d in self.report["diagnoses"]]


def smoke_env(**extra: str) -> dict[str, str]:
    """The test's environment without proxy variables (so only 127.0.0.1 is ever contacted)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(extra)
    return env


BEHAVIOUR_LATENCY_LIMIT_MS = "1000"
"""``--latency-limit`` for runs that test behaviour, not speed: a shared 2-core machine busy
with benchmarks can take a loopback round trip past the operators' 100 ms default. The latency
check itself is proved both ways by tests/test_smoke.py's own limits."""


def latency_args(args: tuple[str, ...]) -> tuple[str, ...]:
    """``--latency-limit BEHAVIOUR_LATENCY_LIMIT_MS`` unless the run sets its own (or watches)."""
    if "--latency-limit" in args or (args and args[0] == "watch"):
        return ()
    return ("--latency-limit", BEHAVIOUR_LATENCY_LIMIT_MS)


def run_smoke(tmp: Path, *args: str, timeout: float = 60.0,
              env: dict[str, str] | None = None) -> SmokeRun:
    """``python -m smoke ARGS --json FILE``: the real command line, its exit code and report;
    its latency limit is ``BEHAVIOUR_LATENCY_LIMIT_MS`` unless ARGS give one."""
    report = tmp / f"report-{time.monotonic_ns()}.json"
    done = subprocess.run(
        [sys.executable, "-m", "smoke", *args, *latency_args(args), "--json", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
        env=env if env is not None else smoke_env(),
    )
    data: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
    return SmokeRun(done.returncode, done.stdout, done.stderr, data)


def start_smoke(*args: str) -> LineLog:
    """``python -m smoke ARGS`` in the background, its output lines kept to wait on."""
    return LineLog([sys.executable, "-u", "-m", "smoke", *args, *latency_args(args)],
                   env=smoke_env(), cwd=REPO)
