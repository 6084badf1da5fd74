"""compose.yaml, as the seed's CI uses it: build, `up -d api`, /health, nginx, ws-smoke, down.

Run: .venv/bin/pytest tests/test_compose.py      (about a minute once podman has the layers)

The images are built on the local molecule base image (no registry is reachable here), the
files compose.yaml mounts are rendered by playbooks/compose-site.yml (the roles' templates,
with a 2 s heartbeat so a short sustained check outlives nginx's derived proxy timeout), and
ws-smoke runs through the compose nginx and directly. Needs podman, runc, root and the base
image (infra/images/build-base.sh); a missing piece FAILS the test with the fix (never a skip).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.ports import free_port, wait_for_port
from testkit.smoke_cli import BEHAVIOUR_LATENCY_LIMIT_MS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BASE_IMAGE = os.environ.get("WS_KIT_BASE_IMAGE", "localhost/ws-kit-base:bookworm-v1")
# This machine's egress re-signs TLS with its own CA: pip inside the build must trust what the
# host trusts (the build secret never lands in a layer). Elsewhere it is the public bundle.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# Heartbeat 2 s, pong timeout 1 s: the rule gives nginx 2 + 1 + max(5, 1) = 8 s.
INTERVAL, TIMEOUT, PROXY_TIMEOUT = 2, 1, 8


def _run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _tail(proc: subprocess.CompletedProcess[str], lines: int = 60) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-lines:])


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def _health(port: int, deadline: float) -> dict[str, object]:
    """GET /health until it answers 200 (as the seed's curl -f loop) or the deadline passes."""
    url = f"http://127.0.0.1:{port}/health"
    while True:
        try:
            with _DIRECT.open(url, timeout=2) as response:
                body: dict[str, object] = json.loads(response.read())
                return body
        except urllib.error.HTTPError as exc:  # listening, not ready: a bounded poll
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} answered {exc.code}, never 200") from None
            time.sleep(0.2)
        except OSError as exc:  # nothing listens yet: wait for the port itself
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} never answered: {exc}") from None
            wait_for_port(port, timeout=max(0.1, deadline - time.monotonic()))


class Compose:
    """podman-compose on the repository's compose.yaml, one project per test run."""

    def __init__(self, tmp_path: Path) -> None:
        self.api_port, self.nginx_port = free_port(), free_port()
        self.dir = tmp_path / "compose"
        self.project = f"wskit-test-{os.getpid()}"
        self.env = dict(os.environ)
        self.env.update(
            PATH=f"{BIN}{os.pathsep}{self.env.get('PATH', '')}",
            CONTAINERS_CONF=str(ROOT / "infra" / "containers.conf"),
            ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
            WS_KIT_BASE_IMAGE=BASE_IMAGE, WS_KIT_IMAGE_TAG="test",
            WS_KIT_COMPOSE_DIR=str(self.dir),
            WS_KIT_API_PORT=str(self.api_port), WS_KIT_NGINX_PORT=str(self.nginx_port),
        )
        if "WS_KIT_BUILD_CA" not in self.env and HOST_CA.is_file():
            self.env["WS_KIT_BUILD_CA"] = str(HOST_CA)

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = _run([str(BIN / "podman-compose"), "-p", self.project, *args], self.env, timeout)
        assert proc.returncode == 0, f"podman-compose {' '.join(args)}:\n{_tail(proc)}"
        return proc

    def logs(self) -> str:
        proc = _run([str(BIN / "podman-compose"), "-p", self.project, "logs"], self.env, 60)
        return _tail(proc, 80)


def _require_podman(env: dict[str, str]) -> None:
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    assert not missing, f"compose needs {', '.join(missing)}: apt-get install -y podman runc"
    assert (BIN / "podman-compose").exists(), "pip install -e '.[dev]' (podman-compose)"
    proc = _run(["podman", "image", "exists", BASE_IMAGE], env, 60)
    assert proc.returncode == 0, (
        f"base image {BASE_IMAGE} missing: run infra/images/build-base.sh (as root, ~2 min)"
    )


@pytest.fixture
def compose(tmp_path: Path) -> Iterator[Compose]:
    """The compose project with its files rendered; always brought down afterwards."""
    stack = Compose(tmp_path)
    _require_podman(stack.env)
    render = _run(
        [str(BIN / "ansible-playbook"), "playbooks/compose-site.yml",
         "-e", f"ws_ping_interval={INTERVAL}", "-e", f"ws_ping_timeout={TIMEOUT}"],
        stack.env, 240,
    )
    assert render.returncode == 0, _tail(render)
    try:
        yield stack
    finally:
        stack("down", "-t", "15")


@pytest.mark.molecule
@pytest.mark.timeout(600)
def test_compose_api_then_nginx_pass_ws_smoke(compose: Compose, tmp_path: Path) -> None:
    site = (compose.dir / "ws-kit.conf").read_text()
    assert f"proxy_read_timeout {PROXY_TIMEOUT}s;" in site, site
    assert f"server 127.0.0.1:{compose.api_port} " in site, site
    assert f'WS_PING_INTERVAL="{INTERVAL}"' in (compose.dir / "api.env").read_text()

    compose("build", timeout=480)
    # The seed's CI: `docker-compose up -d api`, then curl -f localhost:9000/health.
    compose("up", "-d", "api")
    try:
        health = _health(compose.api_port, time.monotonic() + 60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{compose.logs()}") from None
    assert health["status"] == "ok", health
    assert health["config"] == {"ping_interval": INTERVAL, "ping_timeout": TIMEOUT}, health

    compose("up", "-d")
    _health(compose.nginx_port, time.monotonic() + 30)
    served = compose("exec", "nginx", "nginx", "-T").stdout
    assert f"proxy_read_timeout {PROXY_TIMEOUT}s;" in served, served

    # Through nginx (and directly, to tell proxy from backend): the sustained check outlives
    # nginx's 8 s proxy timeout only because the heartbeats keep the connection busy.
    report = tmp_path / "smoke.json"
    origin = f"http://127.0.0.1:{compose.nginx_port}"
    smoke = _run(
        [str(BIN / "ws-smoke"), f"ws://127.0.0.1:{compose.nginx_port}",
         "--direct", f"ws://127.0.0.1:{compose.api_port}", "--origin", origin,
         "--sustain", str(PROXY_TIMEOUT + 4), "--json", str(report),
         "--latency-limit", BEHAVIOUR_LATENCY_LIMIT_MS],
        compose.env, 120,
    )
    assert smoke.returncode == 0, f"{_tail(smoke, 80)}\n{compose.logs()}"
    results = json.loads(report.read_text())["results"]
    checks = {(r.get("via", "target"), r["name"]): r["status"] for r in results}
    assert checks[("target", "sustained")] == "pass", checks
    assert checks[("direct", "handshake")] == "pass", checks
