"""nginx from a project folder on a free 127.0.0.1 port: ``nginx -p DIR -c DIR/nginx.conf``.

``Nginx`` runs any site (the smoke tests write deliberately broken ones); ``NginxProxy`` runs
the deployment's own site (``testkit.site``: the role's template, rendered by Ansible) in
front of one or more backend ports. pid, logs and temp files stay in the folder.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testkit import site as role_site
from testkit.ports import LOOPBACK, free_port
from testkit.processes import pinned, stop
from testkit.procfs import wait_until

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

MAIN_CONF = """\
{main_lines}pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{ {events} }}
http {{
    access_log {access_log};
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
{http_lines}    include {dir}/site.conf;
}}
"""


def main_conf(folder: Path, *, workers: int = 1, connections: int = 1024,
              access_log: bool = False, http_lines: tuple[str, ...] = (),
              main_lines: tuple[str, ...] = (), worker_limits: tuple[str, ...] = ()) -> str:
    """The main configuration: everything under ``folder``, the site from ``site.conf``.

    ``worker_limits``: the worker lines of the role's own main configuration
    (``testkit.site.worker_limits``), in place of ``workers`` and ``connections`` (and this
    process's open-file limit). ``http_lines`` are extra directives of the http block (a
    response header, say), ``main_lines`` of the main context.
    """
    if not worker_limits:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        worker_limits = (f"worker_processes {workers};", f"worker_rlimit_nofile {nofile};",
                         f"worker_connections {connections};")
    events = [line for line in worker_limits if line.startswith("worker_connections")]
    main = [line for line in worker_limits if line not in events] + list(main_lines)
    return MAIN_CONF.format(
        dir=folder, events=" ".join(events),
        access_log=f"{folder}/access.log" if access_log else "off",
        http_lines="".join(f"    {line}\n" for line in http_lines),
        main_lines="".join(f"{line}\n" for line in main),
    )


@dataclass
class Nginx:
    """One nginx master in ``folder`` serving ``site`` (the text of site.conf) on ``port``."""

    folder: Path
    site: str
    port: int
    workers: int = 1
    connections: int = 1024
    access_log: bool = False
    http_lines: tuple[str, ...] = ()
    main_lines: tuple[str, ...] = ()
    worker_limits: tuple[str, ...] = ()
    """The role's worker lines (``testkit.site.worker_limits``): these replace ``workers``
    and ``connections``."""
    core: int | None = None
    """Pin nginx (master and workers) to this CPU core (benchmarks)."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "error.log"

    def write(self) -> None:
        (self.folder / "tmp").mkdir(parents=True, exist_ok=True)
        (self.folder / "site.conf").write_text(self.site)
        (self.folder / "nginx.conf").write_text(main_conf(
            self.folder, workers=self.workers, connections=self.connections,
            access_log=self.access_log, http_lines=self.http_lines,
            main_lines=self.main_lines, worker_limits=self.worker_limits))

    def argv(self, *extra: str) -> list[str]:
        return [NGINX, "-p", str(self.folder), "-c", str(self.folder / "nginx.conf"),
                "-e", str(self.log), *extra]

    def start(self) -> Nginx:
        """Write the files, ``nginx -t``, then run it until its workers have started."""
        self.write()
        self.log.touch()
        check = subprocess.run(self.argv("-t"), capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise AssertionError(f"nginx -t failed:\n{check.stderr}")
        self.proc = subprocess.Popen(pinned(self.argv("-g", "daemon off;"), self.core),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.wait_log(r"start worker process \d+", 20)
        return self

    def wait_log(self, pattern: str, timeout: float, after: int = 0) -> int:
        """Wait for a line of the error log at byte offset >= ``after``; its end offset.

        nginx writes its log with O_APPEND and no other event says "workers started", so the
        file is re-read until the line is there (bounded by ``timeout``); a master that exits
        first fails at once.
        """
        regex = re.compile(pattern)
        found: list[int] = []

        def seen() -> bool:
            data = self.log.read_bytes()[after:]
            for match in regex.finditer(data.decode(errors="replace")):
                found.append(after + match.end())
                return True
            return False

        proc = self.proc
        assert proc is not None
        if not wait_until(lambda: seen() or proc.poll() is not None, timeout) or not found:
            raise AssertionError(f"nginx log has no {pattern!r}:\n{self.log.read_text()}")
        return found[0]

    def reload(self) -> None:
        """Rewrite the files, ``nginx -s reload``, wait until new workers run and old ones quit."""
        mark = self.log.stat().st_size
        self.write()
        signal_run = subprocess.run(self.argv("-s", "reload"), capture_output=True, text=True,
                                    check=False)
        assert signal_run.returncode == 0, signal_run.stderr
        self.wait_log(r"start worker process \d+", 20, mark)
        # Old workers close their listening sockets once told to quit gracefully.
        self.wait_log(r"gracefully shutting down", 20, mark)

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        pid = self.proc.pid  # taskset, when pinned, execs nginx: the same pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(child) for child in children.split()]

    def stop(self, graceful: bool = True) -> None:
        """SIGQUIT (finish, then exit) or SIGTERM; SIGKILL if it overstays 10 s."""
        if self.proc is not None:
            stop(self.proc, signal.SIGQUIT if graceful else signal.SIGTERM, 10)


@dataclass
class NginxProxy:
    """The deployment's nginx (``testkit.site``) in ``folder``, in front of ``backend``: the
    role's site, and the worker limits of the role's main configuration (workers,
    ``worker_connections``, ``worker_rlimit_nofile``, ``worker_shutdown_timeout``) derived by
    the role's rule from ``capacity``, as a deployment gets them.

    ``read_timeout`` 0: the rule's value (with ``margin`` as its margin, when given), filled
    in once rendered. ``generation`` is sent as an ``X-Reliability-Generation`` header, so a
    client can tell which configuration answered (the reload case changes it).
    """

    folder: Path
    backend: int | list[int]
    """The port of each instance behind this nginx."""
    read_timeout: int = 0
    interval: float = 30
    timeout: float = 10
    workers: int = 1
    """The host's vCPUs, as the role reads them: nginx's workers."""
    capacity: int | None = None
    """The api host's ``api_max_connections`` (None: the inventory's default, 6,000)."""
    port: int = field(default_factory=free_port)
    generation: int = 1
    per_address_limits: bool = False
    margin: float | None = None
    check_rule: bool = True
    """False for a test that means to break the heartbeat rule (the role would refuse it)."""
    shutdown_timeout: int = 0
    """``nginx_worker_shutdown_timeout`` in seconds (0: none, the role's default)."""
    core: int | None = None
    role_vars: str = "{}"
    """More of the nginx role's variables, as JSON (an app's own locations)."""
    source: str = role_site.SOURCE
    nginx: Nginx | None = None

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    @property
    def worker_limits(self) -> tuple[str, ...]:
        """The worker lines nginx runs with, once started."""
        return self.nginx.worker_limits if self.nginx is not None else ()

    def _rendered(self) -> tuple[str, tuple[str, ...]]:
        role_vars = json.loads(self.role_vars)
        if self.shutdown_timeout:
            role_vars["nginx_worker_shutdown_timeout"] = self.shutdown_timeout
        site = role_site.Site(
            self.port, (self.backend,) if isinstance(self.backend, int) else tuple(self.backend),
            self.interval, self.timeout, self.margin, self.read_timeout or None,
            self.per_address_limits, self.check_rule,
            role_vars=json.dumps(role_vars, sort_keys=True), workers=self.workers,
            capacity=self.capacity)
        text = role_site.render_sites([site])[0]
        if not self.read_timeout:
            self.read_timeout = role_site.read_timeout_of(text)
        return text, role_site.worker_limits(site)

    def _configure(self) -> Nginx:
        if self.nginx is None:
            self.nginx = Nginx(self.folder, "", self.port, core=self.core)
        self.nginx.site, self.nginx.worker_limits = self._rendered()
        self.nginx.http_lines = (
            f"add_header X-Reliability-Generation {self.generation} always;",)
        return self.nginx

    def start(self) -> NginxProxy:
        self._configure().start()
        return self

    def reload(self, **changes: Any) -> None:
        """Apply ``changes`` (fields of this class), re-render, ``nginx -s reload``."""
        for name, value in changes.items():
            setattr(self, name, value)
        self._configure().reload()

    def wait_log(self, pattern: str, timeout: float, after: int = 0) -> int:
        assert self.nginx is not None
        return self.nginx.wait_log(pattern, timeout, after)

    def worker_pids(self) -> list[int]:
        assert self.nginx is not None
        return self.nginx.worker_pids()

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
