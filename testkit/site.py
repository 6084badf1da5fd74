"""The deployment's nginx site for 127.0.0.1 runs, rendered by Ansible itself.

``ansible-playbook testkit/site.yml`` renders the nginx role's template with the role's
defaults and vars (and those of any role it depends on), the inventory's
``playbooks/group_vars`` (linked next to a generated inventory, as the project's other
inventories do) and, per site, host variables for the ports, the heartbeat settings and the
limits. The role's asserts run too, unless a site is meant to break the heartbeat rule. So the
file cannot drift from what a deployment gets; nothing here restates the template or the rule.

One ``ansible-playbook`` run (about 2-3 s) renders every site of a batch, and each distinct
site is rendered once per process (a pytest session, a benchmark run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testkit.paths import REPO, VENV_BIN

# Where the inputs live: point these elsewhere if the role or the shared variables move.
ROLE = REPO / "infra" / "roles" / "nginx"
TEMPLATE = ROLE / "templates" / "ws-kit.conf.j2"
MAIN_TEMPLATE = ROLE / "templates" / "nginx.conf.j2"
GROUP_VARS = REPO / "playbooks" / "group_vars"
PLAYBOOK = Path(__file__).with_name("site.yml")
SOURCE = f"{TEMPLATE.relative_to(REPO)} (rendered by ansible-playbook testkit/site.yml)"


@dataclass(frozen=True)
class Site:
    """One nginx site: the role's, for one api host on 127.0.0.1 with ``backends`` ports.

    ``margin`` replaces the rule's margin (``ws_proxy_timeout_margin``) so the proxy cuts a
    silent connection sooner in short runs; ``read_timeout`` overrides the timeouts as an
    inventory may (the role's assert still holds it to the rule unless ``check_rule`` is
    False, for a test that means to break it). Load tests and benchmarks open thousands of
    sockets from one address, so the role's per-address limits are off unless
    ``per_address_limits``.
    """

    listen: int
    backends: tuple[int, ...]
    interval: float = 30
    timeout: float = 10
    margin: float | None = None
    read_timeout: int | None = None
    per_address_limits: bool = False
    check_rule: bool = True
    tls_port: int | None = None
    """Also listen with TLS here, the certificate and key from ``tls_dir`` (the role's
    ``ws-kit.crt`` and ``ws-kit.key``, as its TLS tasks install them)."""
    tls_dir: str | None = None
    role_vars: str = "{}"
    """More of the role's variables for the nginx host, as JSON (hashable: sites are cached)."""
    workers: int = 1
    """The host's vCPUs as the role reads them (``processor_vcpus``): its worker count."""
    capacity: int | None = None
    """``api_max_connections`` of the api host behind it (None: the inventory's default),
    from which the role derives nginx's worker limits."""

    def shared(self) -> dict[str, Any]:
        """The deployment's shared ws_* values: every host of the site gets them, as a
        deployment's whole inventory does (the role's contract check compares the hosts)."""
        variables: dict[str, Any] = {"ws_ping_interval": self.interval,
                                     "ws_ping_timeout": self.timeout}
        if self.margin is not None:
            variables["ws_proxy_timeout_margin"] = self.margin
        if self.read_timeout is not None:
            variables["ws_proxy_read_timeout"] = self.read_timeout
            variables["ws_proxy_send_timeout"] = self.read_timeout
        return variables

    def hostvars(self, group: str, dest: Path) -> dict[str, Any]:
        """The nginx host's variables: listener, upstream group, limits, where to render."""
        variables: dict[str, Any] = {
            **self.shared(),
            "nginx_upstream_group": group,
            "nginx_listen_address": "127.0.0.1",
            "nginx_listen_port": self.listen,
            "testkit_check_rule": self.check_rule,
            "testkit_template": str(TEMPLATE),
            "testkit_dest": str(dest),
            "testkit_main_template": str(MAIN_TEMPLATE),
            "testkit_main_dest": f"{dest}.main",
            "ws_contract_api_group": group,
            # What the role reads from the host's processor_vcpus fact (no facts gathered here).
            "ws_capacity_nginx_workers": self.workers,
        }
        if self.tls_port is not None and self.tls_dir is not None:
            variables.update(nginx_tls_listen_port=self.tls_port, nginx_tls_dir=self.tls_dir,
                             nginx_tls_certificate_src=f"{self.tls_dir}/ws-kit.crt",
                             nginx_tls_certificate_key_src=f"{self.tls_dir}/ws-kit.key")
        if not self.per_address_limits:
            variables.update(nginx_limit_conn_per_address=0, nginx_limit_handshake_rate=0)
        variables.update(json.loads(self.role_vars))
        return variables


_rendered: dict[Site, tuple[str, str]] = {}
_lock = threading.Lock()


def _render(sites: Iterable[Site]) -> list[tuple[str, str]]:
    wanted = list(sites)
    with _lock:
        missing = list(dict.fromkeys(s for s in wanted if s not in _rendered))
        if missing:
            _rendered.update(zip(missing, _ansible(missing), strict=True))
        return [_rendered[s] for s in wanted]


def render_sites(sites: Iterable[Site]) -> list[str]:
    """The site file of each of ``sites``; those not rendered yet in one Ansible run."""
    return [site for site, _ in _render(sites)]


_WORKER_LIMIT = re.compile(
    r"^\s*(worker_processes|worker_rlimit_nofile|worker_shutdown_timeout|worker_connections)"
    r" [^;]+;", re.MULTILINE)


def worker_limits(site: Site) -> tuple[str, ...]:
    """The worker lines of the role's main configuration for ``site``'s host (workers, their
    open files and connections, a reload's shutdown timeout), as the role renders them."""
    main = _render([site])[0][1]
    return tuple(match.group(0).strip() for match in _WORKER_LIMIT.finditer(main))


def render_site(listen: int, backend: int | Iterable[int], *, interval: float = 30,
                timeout: float = 10, margin: float | None = None,
                read_timeout: int | None = None, per_address_limits: bool = False,
                check_rule: bool = True, role_vars: str = "{}") -> str:
    """The role's site file listening on 127.0.0.1:``listen`` in front of ``backend`` port(s);
    ``role_vars``: more of the role's variables, as JSON."""
    backends = (backend,) if isinstance(backend, int) else tuple(backend)
    site = Site(listen, backends, interval, timeout, margin, read_timeout, per_address_limits,
                check_rule, role_vars=role_vars)
    return render_sites([site])[0]


_READ_TIMEOUT = re.compile(r"^\s*proxy_read_timeout (\d+)s;", re.MULTILINE)


def read_timeout_of(site: str) -> int:
    """The ``proxy_read_timeout`` a rendered site sets, in seconds."""
    match = _READ_TIMEOUT.search(site)
    if match is None:
        raise ValueError("no proxy_read_timeout in the rendered site")
    return int(match.group(1))


def proxy_read_timeout(interval: float, timeout: float, margin: float | None = None) -> int:
    """nginx's proxy_read_timeout for these heartbeat settings, as the deployment renders it.

    ``margin`` replaces the rule's margin (short runs, so the proxy cuts a silent peer sooner).
    """
    return read_timeout_of(render_site(1, 2, interval=interval, timeout=timeout, margin=margin))


def _ansible(sites: list[Site]) -> list[tuple[str, str]]:
    folder = Path(tempfile.mkdtemp(prefix="testkit-site-"))
    try:
        (folder / "group_vars").symlink_to(GROUP_VARS, target_is_directory=True)
        children: dict[str, Any] = {"testkit_sites": {"hosts": {}}}
        for n, site in enumerate(sites):
            group = f"testkit_backends_{n}"
            children["testkit_sites"]["hosts"][f"testkit-site-{n}"] = site.hostvars(
                group, folder / f"site-{n}.conf")
            children[group] = {"hosts": {f"testkit-api-{n}": {
                **site.shared(),
                "api_advertise_address": "127.0.0.1",
                "api_instance_ports": list(site.backends),
                **({"api_max_connections": site.capacity} if site.capacity else {}),
            }}}
        inventory = {"all": {
            "vars": {"ansible_connection": "local",
                     "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
            "children": children,
        }}
        (folder / "inventory.yml").write_text(json.dumps(inventory, indent=1))
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_LOCAL_TEMP": str(folder / "tmp")}
        done = subprocess.run(
            [str(VENV_BIN / "ansible-playbook"), "-i", str(folder / "inventory.yml"),
             str(PLAYBOOK)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"ansible-playbook {PLAYBOOK.relative_to(REPO)} failed "
                               f"({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
        return [((folder / f"site-{n}.conf").read_text(),
                 (folder / f"site-{n}.conf.main").read_text()) for n in range(len(sites))]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
