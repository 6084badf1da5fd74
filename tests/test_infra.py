"""Deployment checks: lint, the rule between heartbeat and proxy timeout, the deployment
contract (infra/roles/ws_contract: every api host has the values nginx is rendered from), and
molecule.

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
from typing import Any

import pytest
import yaml

from service.limits import connections_for, descriptors_needed
from service.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BASE_IMAGE = "localhost/ws-kit-base:bookworm-v1"
INVENTORY = ROOT / "infra" / "tests" / "inventory.yml"


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


def _render(
    out: Path, *extra: str, inventory: Path = INVENTORY
) -> subprocess.CompletedProcess[str]:
    out.mkdir(parents=True, exist_ok=True)
    return _run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(inventory),
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


def _render_with_and_without(tmp_path: Path, extra_vars: str) -> tuple[Path, Path]:
    """The site rendered at the defaults, and again with ``extra_vars`` (JSON)."""
    base, changed = tmp_path / "base", tmp_path / "changed"
    for out, args in ((base, []), (changed, ["-e", extra_vars])):
        proc = _render(out, *args)
        assert proc.returncode == 0, _tail(proc)
    return base, changed


@pytest.mark.timeout(300)
def test_ping_interval_alone_changes_env_file_and_nginx_timeout(tmp_path: Path) -> None:
    base, changed = _render_with_and_without(tmp_path, '{"ws_ping_interval": 45}')

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


def _directive(text: str, name: str) -> int:
    found = re.findall(rf"(?m)^\s*{name}[= ]\"?(\d+)", text)
    assert len(found) == 1, (name, found)
    return int(found[0])


@pytest.mark.timeout(300)
def test_capacity_is_one_number_and_every_limit_follows_the_services_rule(tmp_path: Path) -> None:
    base, doubled = _render_with_and_without(tmp_path, '{"api_max_connections": 12000}')
    for out, per_host in ((base, 6000), (doubled, 12000)):
        # Two instances per render host: each takes half, and its unit's LimitNOFILE is what the
        # service itself computes for that share (service/limits.py, the same rule).
        share = per_host // 2
        for host in ("render-api1", "render-api2"):
            env = (out / f"{host}.env").read_text()
            assert _directive(env, "WS_MAX_CONNECTIONS") == share
            http = _directive(env, "HTTP_MAX_CONNECTIONS")
            unit = (out / f"{host}.service").read_text()
            assert _directive(unit, "LimitNOFILE") == descriptors_needed(share, http)
            settings = load_settings({"WS_MAX_CONNECTIONS": str(share),
                                      "HTTP_MAX_CONNECTIONS": str(http)})
            assert connections_for(_directive(unit, "LimitNOFILE"), http) == share
            assert settings.ws_max_connections == share
        # nginx: two connections per proxied WebSocket of both hosts, over the workers.
        main = (out / "nginx-main.conf").read_text()
        workers = _directive(main, "worker_processes")
        per_worker = _directive(main, "worker_connections")
        assert per_worker * workers >= 2 * 2 * per_host * 1.25
        assert _directive(main, "worker_rlimit_nofile") == per_worker + 256
        assert "worker_shutdown_timeout" not in re.sub(r"(?m)^\s*#.*$", "", main)
        site = (out / "nginx.conf").read_text()
        assert re.search(r"(?m)^\s*listen \d+ reuseport;", site), site


@pytest.mark.timeout(300)
def test_preflight_refuses_a_capacity_the_host_cannot_hold(tmp_path: Path) -> None:
    # 500,000,000 WebSockets per instance: 2 x that open files, past any fs.nr_open (<= 2**30).
    proc = _render(tmp_path, "-e", '{"api_max_connections": 1000000000}')
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, _tail(proc)
    assert "api host render-api1 cannot hold api_max_connections=1000000000" in output, _tail(proc)
    assert "LimitNOFILE=1000001280" in output, _tail(proc)
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('{"ws_proxy_read_timeout": 40}', "nginx would cut healthy WebSockets"),
        ('{"ws_ping_timeout": 30}', "ws_ping_timeout"),
        ('{"ws_ping_interval": "abc"}', "ws_ping_interval"),
        ('{"ws_allowed_origins": ["example.com"]}', "ws_allowed_origins"),
        ('{"nginx_trusted_proxies": ["lb.internal"]}', "nginx_trusted_proxies must be a list"),
        ('{"nginx_proxy_protocol": true}', "nginx_proxy_protocol needs nginx_trusted_proxies"),
        ('{"api_max_connections": "lots"}', "api_max_connections must be a whole number >= 1"),
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


# --- The deployment contract: one value of each shared variable for every host --------------


def _inventory(folder: Path, variables: dict[str, dict[str, Any]]) -> Path:
    """The render inventory, with ``variables`` added per host (or for the ``ws_kit`` group)."""
    data = yaml.safe_load(INVENTORY.read_text())
    group = data["ws_kit"]
    hosts = {**group["children"]["api"]["hosts"], **group["children"]["nginx"]["hosts"]}
    for name, extra in variables.items():
        target = group["vars"] if name == "ws_kit" else hosts[name]
        target.update(extra)
    path = folder / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def _changed_counts(output: str) -> list[int]:
    return [int(n) for n in re.findall(r"\bchanged=(\d+)", output)]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("variables", "message"),
    [
        # An api host with its own heartbeat: nginx's timeout would not cover it.
        (
            {"render-api2": {"ws_ping_interval": 45}},
            "api host 'render-api2' has ws_ping_interval=45 where 'render-nginx' has "
            "ws_ping_interval=30.",
        ),
        # The nginx host alone overridden: every api host differs from it.
        (
            {"render-nginx": {"ws_ping_timeout": 5}},
            "api host 'render-api1' has ws_ping_timeout=10 where 'render-nginx' has "
            "ws_ping_timeout=5. api host 'render-api2' has ws_ping_timeout=10",
        ),
        (
            {"render-api1": {"ws_allowed_origins": ["https://other.example"]}},
            "api host 'render-api1' has ws_allowed_origins=['https://other.example'] where",
        ),
        # The service variable behind a shared value, set around it.
        (
            {"render-api2": {"api_extra_env": {"WS_PING_INTERVAL": "45"}}},
            "api host 'render-api2' sets WS_PING_INTERVAL in api_extra_env (set ws_ping_interval "
            "instead).",
        ),
        (
            {"render-api1": {"api_extra_env": {"ws_ping_timeout": "1"}}},
            "api host 'render-api1' sets WS_PING_TIMEOUT in api_extra_env",
        ),
        # A variable the api role writes itself (the unit's PORT), read from its templates.
        (
            {"render-api1": {"api_extra_env": {"PORT": "1", "FOO": "bar"}}},
            "the role writes them (templates/ws-kit.env.j2, the unit's Environment=), from the "
            "role's and the shared ws_* variables. It sets PORT.",
        ),
    ],
    ids=[
        "api-interval",
        "nginx-timeout",
        "api-origins",
        "extra-env-interval",
        "extra-env-lowercase",
        "extra-env-port",
    ],
)
def test_contract_breach_fails_naming_host_and_variable_before_any_change(
    tmp_path: Path, variables: dict[str, dict[str, Any]], message: str
) -> None:
    out = tmp_path / "out"
    proc = _render(out, inventory=_inventory(tmp_path, variables))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, _tail(proc)
    assert message in " ".join(output.split()), _tail(proc)
    assert "Preflight - check the shared and role variables" in output
    # any_errors_fatal: no host went on to render anything.
    assert list(out.iterdir()) == [], list(out.iterdir())
    assert set(_changed_counts(output)) == {0}, _tail(proc)


def _failed_saying(proc: subprocess.CompletedProcess[str], message: str) -> str:
    """The run's output, once it is known to have failed with ``message`` (any wrapping)."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, _tail(proc)
    assert message in " ".join(output.split()), _tail(proc)
    return output


@pytest.mark.timeout(300)
def test_contract_breach_hides_the_token(tmp_path: Path) -> None:
    variables = {"render-api2": {"ws_auth_token": "s3cret-api"}}
    proc = _render(tmp_path / "out", inventory=_inventory(tmp_path, variables))
    output = _failed_saying(
        proc, "api host 'render-api2' has ws_auth_token=(hidden) where 'render-nginx' has "
              "ws_auth_token=(hidden).")
    assert "s3cret" not in output


@pytest.mark.timeout(300)
def test_deploy_stops_in_preflight_on_a_diverging_api_host(tmp_path: Path) -> None:
    """The real entry point, in check mode: no play after the preflight starts."""
    inventory = _inventory(tmp_path, {"render-api1": {"ws_ping_interval": 20}})
    proc = _run(
        [str(BIN / "ansible-playbook"), "--check", "-i", str(inventory), "playbooks/deploy.yml"],
        timeout=180,
    )
    output = _failed_saying(
        proc, "api host 'render-api1' has ws_ping_interval=20 where 'render-nginx' has "
              "ws_ping_interval=30.")
    plays = re.findall(r"^PLAY \[(.+?)\]", output, re.MULTILINE)
    assert plays == [
        "Preflight - learn the hosts' cores and memory",
        "Preflight - check the shared and role variables",
    ], plays
    assert set(_changed_counts(output)) == {0}, _tail(proc)


@pytest.mark.timeout(300)
def test_contract_holds_when_every_host_has_the_same_values(tmp_path: Path) -> None:
    """Overrides for the whole deployment pass, however each host spells the same value."""
    variables: dict[str, dict[str, Any]] = {
        "ws_kit": {"ws_ping_interval": 45, "ws_require_origin": True},
        # As an INI inventory or -e key=value would give them: strings.
        "render-api1": {"ws_ping_interval": "45", "ws_require_origin": "true"},
        "render-api2": {"ws_ping_interval": 45.0, "api_extra_env": {"FOO": "bar"}},
    }
    out = tmp_path / "out"
    proc = _render(out, inventory=_inventory(tmp_path, variables))
    assert proc.returncode == 0, _tail(proc)
    assert "proxy_read_timeout 78s;" in (out / "nginx.conf").read_text()
    for host in ("render-api1", "render-api2"):
        env = (out / f"{host}.env").read_text()
        assert 'WS_REQUIRE_ORIGIN="true"' in env, env
        assert re.search(r'^WS_PING_INTERVAL="45(\.0)?"$', env, re.MULTILINE), env
    assert 'FOO="bar"' in (out / "render-api2.env").read_text()
