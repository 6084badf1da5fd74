"""``testkit.site``: the nginx site of the reliability suite and the benchmarks, by Ansible."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from testkit import site as role_site
from testkit.nginx import NGINX, main_conf
from testkit.site import Site, proxy_read_timeout, render_site, render_sites

NGINX_DEFAULTS = yaml.safe_load(
    (Path(__file__).parent.parent / "infra/roles/nginx/defaults/main.yml").read_text())
RULE = [(30, 10, 55), (45, 10, 78), (2, 1, 8), (0.4, 0.2, 6)]


@pytest.fixture(scope="module", autouse=True)
def _one_ansible_run() -> None:
    """Every site of this module in one ``ansible-playbook`` run; the tests then hit the cache."""
    render_sites([Site(1, (2,), interval, timeout) for interval, timeout, _ in RULE]
                 + [Site(18999, (19998, 19999), 2, 1, per_address_limits=limits)
                    for limits in (False, True)]
                 + [Site(1, (2,), 2, 1, margin=1.0)])


@pytest.mark.parametrize(("interval", "timeout", "expected"), RULE)
def test_rule_is_the_deployments(interval: float, timeout: float, expected: int) -> None:
    """The numbers docs/deploy.md and tests/test_infra.py quote, from the one written rule."""
    assert proxy_read_timeout(interval, timeout) == expected


def test_margin_replaces_the_rules_margin() -> None:
    assert proxy_read_timeout(2, 1, margin=1.0) == 4  # ceil(2 + 1 + 1)


@pytest.mark.parametrize("limits", [False, True], ids=["no-limits", "role-limits"])
def test_rendered_site_passes_nginx_t(tmp_path: Path, limits: bool) -> None:
    site = render_site(18999, [19998, 19999], interval=2, timeout=1, per_address_limits=limits)
    assert "proxy_read_timeout 8s;" in site
    assert "listen 127.0.0.1:18999 reuseport;" in site
    assert "server 127.0.0.1:19999 max_fails=0;" in site
    assert "least_conn;" in site
    per_address = NGINX_DEFAULTS["nginx_limit_conn_per_address"]
    assert (f"limit_conn ws_kit_api_conn {per_address};" in site) is limits
    assert "proxy_set_header Upgrade $http_upgrade;" in site
    (tmp_path / "tmp").mkdir()
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(main_conf(tmp_path))
    result = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
         "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True, check=False, timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_each_site_is_rendered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[int] = []
    real = role_site._ansible

    def counted(sites: list[Site]) -> list[tuple[str, str]]:
        runs.append(len(sites))
        return real(sites)

    monkeypatch.setattr(role_site, "_ansible", counted)
    first = render_site(18999, [19998, 19999], interval=2, timeout=1)
    assert runs == []  # rendered by the module's batch
    fresh = [Site(18998, (19997,), 3, 1), Site(18997, (19996,), 3, 1)]
    assert render_sites(fresh + fresh) == render_sites(fresh) * 2
    assert runs == [2]  # one Ansible run for both new sites, none for the repeats
    assert render_site(18999, (19998, 19999), interval=2, timeout=1) == first


def test_the_roles_assert_refuses_a_timeout_below_the_rule() -> None:
    """The role's own assert runs: a read timeout under the rule is refused, unless a test
    means to break the rule (the nginx reload case)."""
    with pytest.raises(RuntimeError, match="nginx would cut healthy WebSockets"):
        render_site(18996, 19995, interval=1.5, timeout=0.5, read_timeout=1)
    site = render_site(18996, 19995, interval=1.5, timeout=0.5, read_timeout=1, check_rule=False)
    assert role_site.read_timeout_of(site) == 1


def test_the_harness_nginx_runs_the_roles_worker_limits() -> None:
    """Load tests and the soak get nginx's worker limits from the role's main configuration
    (its rule: 2 per WebSocket x capacity x 1.25 / workers + 1024; open files + 256)."""
    site = Site(18998, (19997,), workers=2, capacity=10_000)
    assert role_site.worker_limits(site) == (
        "worker_processes 2;", "worker_rlimit_nofile 13780;", "worker_connections 13524;")
    default = role_site.worker_limits(Site(18998, (19997,)))  # the inventory's 6,000, 1 vCPU
    assert "worker_connections 16024;" in default
    timed = Site(18998, (19997,), role_vars='{"nginx_worker_shutdown_timeout": 3}')
    assert "worker_shutdown_timeout 3s;" in role_site.worker_limits(timed)
