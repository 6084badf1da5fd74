"""The deployment's nginx site, rendered outside Ansible for tests and benchmarks on 127.0.0.1.

The heartbeat -> proxy timeout rule is written once, as Jinja in
``playbooks/group_vars/all.yml``; this module evaluates that very expression instead of
restating it in Python, and renders ``infra/roles/nginx/templates/ws-kit.conf.j2`` with the
role's defaults and vars, as Ansible would for one api host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import yaml

ROOT = Path(__file__).resolve().parents[1]
GROUP_VARS = ROOT / "playbooks" / "group_vars" / "all.yml"
ROLE = ROOT / "infra" / "roles" / "nginx"
TEMPLATE = ROLE / "templates" / "ws-kit.conf.j2"
SOURCE = "infra/roles/nginx/templates/ws-kit.conf.j2"

_env = jinja2.Environment(  # noqa: S701 - renders nginx configuration, not HTML
    loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)),
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
)
_env.filters["comment"] = lambda text: "\n".join(
    f"# {line}" if line else "#" for line in str(text).splitlines()
)


def _resolve(variables: dict[str, Any], names: list[str]) -> None:
    """Render the Jinja-valued variables in ``names``, in order (Ansible's lazy templating)."""
    for name in names:
        value = variables[name]
        if isinstance(value, str) and "{{" in value:
            variables[name] = _env.from_string(value).render(**variables).strip()


def proxy_read_timeout(interval: float, timeout: float) -> int:
    """The deployment's ``ws_proxy_read_timeout_min`` for these heartbeat settings."""
    rule = yaml.safe_load(GROUP_VARS.read_text())
    variables = {
        "ws_ping_interval": interval, "ws_ping_timeout": timeout,
        "ws_proxy_timeout_margin": rule["ws_proxy_timeout_margin"],
        "ws_proxy_read_timeout_min": rule["ws_proxy_read_timeout_min"],
    }
    _resolve(variables, ["ws_proxy_timeout_margin", "ws_proxy_read_timeout_min"])
    return int(variables["ws_proxy_read_timeout_min"])


def render_site(listen: int, backend: int | list[int], *, interval: float = 30,
                timeout: float = 10, read_timeout: int | None = None,
                note: str = "a 127.0.0.1 run", per_address_limits: bool = False) -> str:
    """The role's site file for one api host on 127.0.0.1:``backend``, listening on ``listen``.

    ``backend``: the port of each instance. ``read_timeout`` overrides the rule (a test that
    wants the proxy to cut sooner); by default it is the rule's value, as in a real deployment.
    Load tests and benchmarks open thousands of sockets from one address, so the role's
    per-address limits are off unless ``per_address_limits`` asks for the role's defaults.
    """
    ports = [backend] if isinstance(backend, int) else backend
    variables: dict[str, Any] = {}
    for path in (ROLE / "defaults" / "main.yml", ROLE / "vars" / "main.yml"):
        variables.update(yaml.safe_load(path.read_text()) or {})
    minimum = proxy_read_timeout(interval, timeout)
    variables.update(
        ansible_managed=f"rendered by tests/nginx_site.py for {note}",
        groups={variables["nginx_upstream_group"]: ["api-1"]},
        hostvars={"api-1": {"api_advertise_address": "127.0.0.1", "api_instance_ports": ports}},
        nginx_listen_address="127.0.0.1", nginx_listen_port=listen,
        ws_ping_interval=interval, ws_ping_timeout=timeout,
        ws_proxy_read_timeout_min=minimum,
        ws_proxy_read_timeout=read_timeout or minimum,
        ws_proxy_send_timeout=read_timeout or minimum,
    )
    if not per_address_limits:
        variables.update(nginx_limit_conn_per_address=0, nginx_limit_handshake_rate=0)
    _resolve(variables, [name for name in variables if name.startswith("nginx_")])
    variables["nginx_tls_enabled"] = variables["nginx_tls_enabled"] == "True"
    return _env.get_template(TEMPLATE.name).render(**variables)
