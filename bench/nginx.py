"""nginx in front of a benchmark backend, from the project's own nginx role template.

The site file is rendered from ``infra/roles/nginx/templates/ws-kit.conf.j2`` with the role's
defaults, the upstream pointed at the backend and the listen port on 127.0.0.1; when that
template is missing or does not render, an equivalent minimal site with the same WebSocket
directives is used instead (the run's JSON says which). nginx runs from a temporary prefix,
one worker, pinned to the servers' core.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.servers import free_port, pinned, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
ROLE = ROOT / "infra" / "roles" / "nginx"
TEMPLATE = ROLE / "templates" / "ws-kit.conf.j2"
NGINX = "/usr/sbin/nginx"

FALLBACK_SITE = """\
map $http_upgrade $connection_upgrade {{
    default upgrade;
    ''      '';
}}
upstream ws_kit_api {{
    server 127.0.0.1:{backend};
    keepalive 16;
}}
server {{
    listen 127.0.0.1:{listen};
    proxy_http_version 1.1;
    proxy_read_timeout {read_timeout}s;
    proxy_send_timeout {read_timeout}s;
    proxy_buffering off;
    proxy_set_header Host $host;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    location / {{
        proxy_pass http://ws_kit_api;
    }}
}}
"""

MAIN_CONF = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {prefix}/site.conf;
}}
"""


def available() -> bool:
    return Path(NGINX).exists() or shutil.which("nginx") is not None


def _read_timeout(interval: float = 30.0, timeout: float = 10.0) -> int:
    """The deployment's rule (playbooks/group_vars/all.yml): interval + timeout + margin."""
    return int(interval + timeout + max(5.0, interval / 2))


def render_role_site(backend: int, listen: int) -> str:
    """Render the nginx role's site template for one backend; raises if it cannot."""
    import jinja2  # noqa: PLC0415 - only needed for the nginx rows
    import yaml  # noqa: PLC0415

    variables: dict[str, Any] = {}
    defaults = ROLE / "defaults" / "main.yml"
    if defaults.exists():
        variables.update(yaml.safe_load(defaults.read_text()) or {})
    read_timeout = _read_timeout()
    variables.update(
        ansible_managed="rendered by bench/nginx.py for a benchmark run",
        nginx_upstream_group="api", groups={"api": ["bench-backend"]},
        hostvars={"bench-backend": {"api_advertise_address": "127.0.0.1", "api_port": backend}},
        nginx_listen_address="127.0.0.1", nginx_listen_port=listen, nginx_tls_enabled=False,
        ws_ping_interval=30, ws_ping_timeout=10, ws_proxy_read_timeout=read_timeout,
        ws_proxy_send_timeout=read_timeout, ws_proxy_read_timeout_min=read_timeout,
    )
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701
    env.filters["comment"] = lambda text: "\n".join(f"# {line}" for line in str(text).splitlines())
    rendered = env.from_string(TEMPLATE.read_text()).render(**variables)
    # The role's defaults are Jinja too (e.g. nginx_tls_dir); a second pass resolves them.
    return env.from_string(rendered).render(**variables) if "{{" in rendered else rendered


class Nginx:
    """One nginx in front of ``backend`` on a free 127.0.0.1 port."""

    def __init__(self, backend: int, core: int | None) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        (self.dir / "tmp").mkdir()
        try:
            site = render_role_site(backend, self.port)
            self.source = "infra/roles/nginx/templates/ws-kit.conf.j2 (rendered)"
        except Exception as exc:  # missing or unusable template: the equivalent minimal site
            site = FALLBACK_SITE.format(backend=backend, listen=self.port,
                                        read_timeout=_read_timeout())
            self.source = f"minimal equivalent site (role template unusable: {exc!s:.120})"
        (self.dir / "site.conf").write_text(site)
        (self.dir / "nginx.conf").write_text(MAIN_CONF.format(prefix=self.dir))
        binary = NGINX if Path(NGINX).exists() else (shutil.which("nginx") or NGINX)
        argv = [binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                "-g", "daemon off;"]
        check = subprocess.run(  # noqa: S603 - fixed argv
            [*argv[:-2], "-t"], capture_output=True, text=True, check=False
        )
        if check.returncode != 0 and "minimal" not in self.source:
            site = FALLBACK_SITE.format(backend=backend, listen=self.port,
                                        read_timeout=_read_timeout())
            (self.dir / "site.conf").write_text(site)
            self.source = (
                f"minimal equivalent site (role site failed nginx -t: {check.stderr[-200:]})"
            )
        with (self.dir / "out.log").open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed argv
                pinned(argv, core), stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc)

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
