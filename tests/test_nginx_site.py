"""The out-of-Ansible renderer used by the reliability suite and the benchmarks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.nginx_site import proxy_read_timeout, render_site


@pytest.mark.parametrize(
    ("interval", "timeout", "expected"),
    [(30, 10, 55), (45, 10, 78), (2, 1, 8), (0.4, 0.2, 6)],
)
def test_rule_is_read_from_group_vars(interval: float, timeout: float, expected: int) -> None:
    """The numbers docs/deploy.md and tests/test_infra.py quote, from the one written rule."""
    assert proxy_read_timeout(interval, timeout) == expected


@pytest.mark.parametrize("limits", [False, True], ids=["no-limits", "role-limits"])
def test_rendered_site_passes_nginx_t(tmp_path: Path, limits: bool) -> None:
    site = render_site(18999, [19998, 19999], interval=2, timeout=1, per_address_limits=limits)
    assert "proxy_read_timeout 8s;" in site
    assert "server 127.0.0.1:19999 max_fails=0;" in site
    assert "least_conn;" in site
    assert ("limit_conn ws_kit_api_conn 32;" in site) is limits
    assert "proxy_set_header Upgrade $http_upgrade;" in site
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off; include {tmp_path}/site.conf; }}\n"
    )
    result = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True, text=True, check=False, timeout=30,
    )
    assert result.returncode == 0, result.stderr
