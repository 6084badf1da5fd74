"""nginx in front of a benchmark backend: the deployment's own site, rendered by Ansible.

The site file is the nginx role's template with its defaults and the rule's
``proxy_read_timeout`` for the service's default 30 s / 10 s heartbeat (``testkit.site``),
the upstream pointed at the backend. nginx runs from a temporary prefix, one worker, pinned
to the servers' core.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import yaml

from testkit.nginx import NGINX, NginxProxy
from testkit.paths import REPO

# The role's WebSocket locations, and the kit-no-session peer's /ws/raw (bench.peers.kit_raw).
_ROLE = yaml.safe_load((REPO / "infra/roles/nginx/defaults/main.yml").read_text())
_LOCATIONS = json.dumps({"nginx_ws_locations": [*_ROLE["nginx_ws_locations"], "/ws/raw"]})


def available() -> bool:
    return Path(NGINX).exists() or shutil.which("nginx") is not None


class Nginx:
    """One nginx in front of ``backend`` on a free 127.0.0.1 port."""

    def __init__(self, backend: int, core: int | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        # One worker, pinned beside the server under test; its limits are the role's.
        self.proxy = NginxProxy(self.dir, backend, workers=1, core=core, role_vars=_LOCATIONS)
        self.proxy.start()
        self.port = self.proxy.port
        self.source = self.proxy.source

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.proxy.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
