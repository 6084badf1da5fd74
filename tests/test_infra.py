"""Deployment checks: lint, the rule between heartbeat and proxy timeout, and molecule.

Run: .venv/bin/pytest tests/test_infra.py          (everything, ~10 min with molecule)
     .venv/bin/pytest tests/test_infra.py -m "not molecule"   (seconds)
Molecule needs podman, runc, the base image (infra/images/build-base.sh) and root; a missing
piece FAILS the test with the command to fix it (never a skip).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BASE_IMAGE = "localhost/ws-kit-base:bookworm-v1"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["CONTAINERS_CONF"] = str(ROOT / "infra" / "containers.conf")
    env["ANSIBLE_ROLES_PATH"] = str(ROOT / "infra" / "roles")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["NO_COLOR"] = "1"
    env["PY_COLORS"] = "0"
    return env


def _run(
    args: list[str], cwd: Path = ROOT, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def _tail(proc: subprocess.CompletedProcess[str], lines: int = 60) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-lines:])


def test_yamllint() -> None:
    proc = _run([str(BIN / "yamllint"), "--strict", "."])
    assert proc.returncode == 0, _tail(proc)


def test_ansible_lint_production() -> None:
    proc = _run([str(BIN / "ansible-lint"), "--nocolor", "--profile", "production"])
    assert proc.returncode == 0, _tail(proc)


def _render(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    out.mkdir(parents=True, exist_ok=True)
    return _run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "infra/tests/inventory.yml",
            "infra/tests/render.yml",
            "-e",
            f"render_dir={out}",
            *extra,
        ],
        timeout=180,
    )


def _changed_lines(a: Path, b: Path) -> list[tuple[str, str]]:
    old, new = a.read_text().splitlines(), b.read_text().splitlines()
    assert len(old) == len(new), f"{a.name}: line count changed"
    return [(x, y) for x, y in zip(old, new, strict=True) if x != y]


@pytest.mark.timeout(300)
def test_ping_interval_alone_changes_env_file_and_nginx_timeout(tmp_path: Path) -> None:
    base, changed = tmp_path / "base", tmp_path / "changed"
    proc = _render(base)
    assert proc.returncode == 0, _tail(proc)
    proc = _render(changed, "-e", '{"ws_ping_interval": 45}')
    assert proc.returncode == 0, _tail(proc)

    # Defaults 30/10: 30 + 10 + max(5, 15) = 55 s. Interval 45: 45 + 10 + 22.5 -> 78 s.
    assert "proxy_read_timeout 55s;" in (base / "nginx.conf").read_text()
    for host in ("render-api1", "render-api2"):
        diff = _changed_lines(base / f"{host}.env", changed / f"{host}.env")
        assert diff == [('WS_PING_INTERVAL="30"', 'WS_PING_INTERVAL="45"')], diff
    diff = _changed_lines(base / "nginx.conf", changed / "nginx.conf")
    directives = [(x.strip(), y.strip()) for x, y in diff if not x.lstrip().startswith("#")]
    assert directives == [
        ("proxy_read_timeout 55s;", "proxy_read_timeout 78s;"),
        ("proxy_send_timeout 55s;", "proxy_send_timeout 78s;"),
    ], diff


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('{"ws_proxy_read_timeout": 40}', "nginx would cut healthy WebSockets"),
        ('{"ws_ping_timeout": 30}', "ws_ping_timeout"),
        ('{"ws_ping_interval": "abc"}', "ws_ping_interval"),
        ('{"ws_allowed_origins": ["example.com"]}', "ws_allowed_origins"),
    ],
)
def test_bad_variable_fails_the_assert_before_any_change(
    tmp_path: Path, extra: str, message: str
) -> None:
    proc = _render(tmp_path, "-e", extra)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, _tail(proc)
    assert message in output, _tail(proc)
    assert re.search(r"Preflight", output)
    # Nothing was rendered: the preflight stopped every host (any_errors_fatal).
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def _require_podman() -> None:
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    assert not missing, (
        f"molecule needs {', '.join(missing)}: apt-get install -y podman runc debootstrap"
    )
    proc = _run(["podman", "image", "exists", BASE_IMAGE], timeout=60)
    assert proc.returncode == 0, (
        f"base image {BASE_IMAGE} missing: run infra/images/build-base.sh (as root, ~2 min)"
    )


def _molecule(cwd: Path, scenario: str) -> None:
    _require_podman()
    proc = _run([str(BIN / "molecule"), "test", "-s", scenario], cwd=cwd, timeout=1500)
    assert proc.returncode == 0, _tail(proc, 120)


@pytest.mark.molecule
@pytest.mark.timeout(900)
def test_molecule_api_role() -> None:
    _molecule(ROOT / "infra" / "roles" / "api", "default")


@pytest.mark.molecule
@pytest.mark.timeout(900)
def test_molecule_nginx_role() -> None:
    _molecule(ROOT / "infra" / "roles" / "nginx", "default")


@pytest.mark.molecule
@pytest.mark.timeout(1500)
def test_molecule_full_stack() -> None:
    _molecule(ROOT / "infra", "stack")


@pytest.mark.molecule
@pytest.mark.timeout(1500)
def test_molecule_rolling_redeploy_under_load() -> None:
    """200 reconnecting clients through nginx while deploy.yml rolls every instance."""
    _molecule(ROOT / "infra", "rolling")
