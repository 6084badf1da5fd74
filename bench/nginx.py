"""nginx in front of a benchmark backend, from the project's own nginx role template.

The site file is the deployment's (``tests.nginx_site``: the role template, its defaults, and
``proxy_read_timeout`` from the rule in ``playbooks/group_vars/all.yml`` for the service's
default 30 s / 10 s heartbeat) with the upstream pointed at the backend. nginx runs from a
temporary prefix, one worker, pinned to the servers' core.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.servers import free_port, pinned, terminate, wait_for_port
from tests import nginx_site

NGINX = "/usr/sbin/nginx"

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


class Nginx:
    """One nginx in front of ``backend`` on a free 127.0.0.1 port."""

    def __init__(self, backend: int, core: int | None) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        (self.dir / "tmp").mkdir()
        (self.dir / "site.conf").write_text(
            nginx_site.render_site(self.port, backend, note="a benchmark run")
        )
        self.source = f"{nginx_site.SOURCE} (rendered)"
        (self.dir / "nginx.conf").write_text(MAIN_CONF.format(prefix=self.dir))
        binary = NGINX if Path(NGINX).exists() else (shutil.which("nginx") or NGINX)
        argv = [binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                "-g", "daemon off;"]
        with (self.dir / "out.log").open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed argv
                pinned(argv, core), stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc)

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        terminate(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
