"""nginx in front of a benchmark backend: the deployment's own site, rendered by Ansible.

The site file is the nginx role's template with its defaults and the rule's
``proxy_read_timeout`` for the service's default 30 s / 10 s heartbeat (``testkit.site``),
the upstream pointed at the backend. nginx runs from a temporary prefix, one worker, pinned
to the servers' core.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from testkit.nginx import NGINX, NginxProxy


def available() -> bool:
    return Path(NGINX).exists() or shutil.which("nginx") is not None


class Nginx:
    """One nginx in front of ``backend`` on a free 127.0.0.1 port."""

    def __init__(self, backend: int, core: int | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.proxy = NginxProxy(self.dir, backend, workers=1, connections=4096, core=core)
        self.proxy.start()
        self.port = self.proxy.port
        self.source = self.proxy.source

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.proxy.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
