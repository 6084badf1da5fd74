"""Real processes for the smoke-checker tests: ``ws-service`` and nginx on free 127.0.0.1 ports.

Readiness is waited on by connecting to the port (and failing fast, with the process's log,
if the process dies first), never by sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path,
                  timeout: float = 20.0) -> None:
    """Block until 127.0.0.1:port accepts a TCP connection; fail with the log if proc exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before listening on "
                                 f"{port}:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listening on {port} after {timeout}s:\n"
                                     f"{log.read_text(errors='replace')}") from None
            # A refused connect returns at once: block on the process for a moment instead
            # of spinning (this is a bounded wait on the process, not a sleep standing in
            # for readiness: readiness is the successful connect above).
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.05)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Service:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def launch_service(tmp: Path, **env: str) -> Service:
    """``ws-service`` on a free port; ``env`` overrides (WS_PING_INTERVAL, ALLOWED_ORIGINS...)."""
    port = free_port()
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("WS_", "ALLOWED_ORIGINS", "PUBLIC_BASE_URL"))}
    base.update({"HOST": "127.0.0.1", "PORT": str(port), "WS_PING_INTERVAL": "0.5",
                 "WS_PING_TIMEOUT": "0.25", "PYTHONUNBUFFERED": "1"})
    base.update(env)
    log = tmp / f"service-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(VENV_BIN / "ws-service")], env=base, stdout=out,
                                stderr=subprocess.STDOUT)
    service = Service(port, proc, log)
    try:
        wait_for_port(port, proc, log)
    except BaseException:
        stop(proc)
        raise
    return service


NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{backend};
            proxy_http_version 1.1;
{upgrade}            proxy_read_timeout {read_timeout};
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""
UPGRADE = ("            proxy_set_header Upgrade $http_upgrade;\n"
           "            proxy_set_header Connection $connection_upgrade;\n")


@dataclass
class Nginx:
    port: int
    proc: subprocess.Popen[bytes]
    dir: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def launch_nginx(tmp: Path, backend: int, *, upgrade: bool = True,
                read_timeout: str = "60s") -> Nginx:
    """A throwaway nginx proxying to 127.0.0.1:backend, rendered into its own folder."""
    port = free_port()
    folder = tmp / f"nginx-{port}"
    (folder / "tmp").mkdir(parents=True)
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=folder, port=port, backend=backend,
                                      upgrade=UPGRADE if upgrade else "",
                                      read_timeout=read_timeout))
    log = folder / "error.log"
    log.touch()
    proc = subprocess.Popen(
        [NGINX, "-p", str(folder), "-c", str(conf), "-e", str(log), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    nginx = Nginx(port, proc, folder)
    try:
        wait_for_port(port, proc, log)
    except BaseException:
        stop(proc)
        raise
    return nginx


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
        for d in self.report["diagnoses"]:
            if d["code"] == code:
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


def run_smoke(tmp: Path, *args: str, timeout: float = 60.0,
              env: dict[str, str] | None = None) -> SmokeRun:
    """``python -m smoke ARGS --json FILE``: the real command line, its exit code and report."""
    report = tmp / f"report-{time.monotonic_ns()}.json"
    done = subprocess.run(
        [sys.executable, "-m", "smoke", *args, "--json", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
        env=env if env is not None else smoke_env(),
    )
    data: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
    return SmokeRun(done.returncode, done.stdout, done.stderr, data)


def start_smoke(*args: str) -> subprocess.Popen[str]:
    """``python -m smoke ARGS`` in the background, stdout line-buffered for ``read_until``."""
    return subprocess.Popen(
        [sys.executable, "-u", "-m", "smoke", *args], cwd=REPO, env=smoke_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def read_until(proc: subprocess.Popen[str], pattern: str, seen: list[str]) -> str:
    """Read ``proc``'s output line by line until one matches (appending every line to
    ``seen``); fails with the output if the process ends first. Bounded by the process's own
    ``--duration``, not by a sleep."""
    assert proc.stdout is not None
    regex = re.compile(pattern)
    for line in proc.stdout:
        seen.append(line.rstrip("\n"))
        if regex.search(line):
            return line
    raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(seen))
